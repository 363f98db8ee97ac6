//! The MedSG-Bench task names and what each asks for.

use std::fmt;

/// A grounding task, named as MedSG-Bench names it in its `task` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// T1: box the one region where two aligned images differ.
    RegisteredDiff,
    /// T2: the same with up to 20 px of misregistration; the box is in the second image.
    NonRegisteredDiff,
    /// T3: a box in one plane of a volume; box the same object in another plane.
    MultiView,
    /// T4: a box in the first frame; box it in the last.
    ObjectTracking,
    /// T5: locate the object shown on its own in image 0 within image 1.
    Concept,
    /// T6: locate a crop (image 1) inside its source (image 0).
    Patch,
    /// T7: a box in one contrast/modality; box the same anatomy in the other.
    Crossmodal,
    /// T8: grounding from text; Tandem does not answer it.
    Referring,
}

impl Task {
    pub const ALL: [Task; 8] = [
        Task::RegisteredDiff,
        Task::NonRegisteredDiff,
        Task::MultiView,
        Task::ObjectTracking,
        Task::Concept,
        Task::Patch,
        Task::Crossmodal,
        Task::Referring,
    ];

    /// The tasks the grounder is trained and evaluated on.
    pub const TRAINED: [Task; 6] =
        [Task::RegisteredDiff, Task::NonRegisteredDiff, Task::MultiView, Task::ObjectTracking, Task::Patch, Task::Crossmodal];

    pub fn medsg_name(self) -> &'static str {
        match self {
            Task::RegisteredDiff => "Registered_Diff",
            Task::NonRegisteredDiff => "Non_Registered_Diff",
            Task::MultiView => "multi_view",
            Task::ObjectTracking => "object_tracking",
            Task::Concept => "concept",
            Task::Patch => "patch",
            Task::Crossmodal => "crossmodal",
            Task::Referring => "referring",
        }
    }

    pub fn from_medsg_name(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.medsg_name().eq_ignore_ascii_case(name))
    }

    /// MedSG-Bench's short code (T1…T8).
    pub fn code(self) -> &'static str {
        match self {
            Task::RegisteredDiff => "T1",
            Task::NonRegisteredDiff => "T2",
            Task::MultiView => "T3",
            Task::ObjectTracking => "T4",
            Task::Concept => "T5",
            Task::Patch => "T6",
            Task::Crossmodal => "T7",
            Task::Referring => "T8",
        }
    }

    pub fn is_difference(self) -> bool {
        matches!(self, Task::RegisteredDiff | Task::NonRegisteredDiff)
    }

    /// The question MedSG-Bench asks for this task; `reference` is embedded where it asks.
    pub fn question(self, reference: Option<[i64; 4]>) -> String {
        let r = reference.map(|b| format!("<|box_start|>({},{}),({},{})<|box_end|>", b[0], b[1], b[2], b[3])).unwrap_or_default();
        match self {
            Task::RegisteredDiff | Task::NonRegisteredDiff => {
                "Compare these two images carefully and give me the coordinates of their difference.".into()
            }
            Task::MultiView => format!(
                "These images share one object in common(the object marked with red bounding box in the first image({r}). Recognize and locate this object in the second image."
            ),
            Task::ObjectTracking => format!(
                "These images are consecutive frames. Track the object marked with red bounding box in the first image({r}) and locate it in the last image."
            ),
            Task::Concept => "The first image shows an object on its own. Locate this object in the second image.".into(),
            Task::Patch => {
                "You are given a source image followed by its several regions. Please locate the first region picture in the source image."
                    .into()
            }
            Task::Crossmodal => format!(
                "The following are two images for you to consider. For the area marked by the red bounding box in the first image({r}), identify and locate the corresponding area in the second image that serves a similar function or shares a similar meaning."
            ),
            Task::Referring => String::new(),
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.medsg_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in Task::ALL {
            assert_eq!(Task::from_medsg_name(t.medsg_name()), Some(t));
        }
        assert_eq!(Task::from_medsg_name("nonsense"), None);
    }
}
