//! `tandem snapshot`: the prior and current panes with their findings drawn on the CPU into a PNG, with no window (reports, tests).

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::cli::CliError;
use crate::cli::series::load_series;
use crate::fsutil::{check_output, write_atomic};
use crate::snapshot::{Mode, compose};

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    pub prior: PathBuf,
    pub current: PathBuf,
    /// Annotation document whose findings are drawn (rejected ones left out).
    #[arg(long)]
    pub annotations: Option<PathBuf>,
    /// What the right pane shows; the left is the prior (flicker-pair: the prior on the current's
    /// grid). Comparisons resample by relative position, unregistered.
    #[arg(long, value_enum, default_value = "side-by-side")]
    pub mode: ModeArg,
    /// The frame of both studies (0-based).
    #[arg(long, default_value_t = 0)]
    pub frame: usize,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out when it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ModeArg {
    SideBySide,
    FlickerPair,
    Fade,
    Subtract,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::SideBySide => Mode::SideBySide,
            ModeArg::FlickerPair => Mode::FlickerPair,
            ModeArg::Fade => Mode::Fade,
            ModeArg::Subtract => Mode::Subtract,
        }
    }
}

pub fn run(args: &SnapshotArgs) -> Result<(), CliError> {
    // The output is checked before anything is loaded: a typo must not cost a long load, and
    // must never replace an input.
    let mut inputs: Vec<&Path> = vec![&args.prior, &args.current];
    inputs.extend(args.annotations.as_deref());
    check_output(&args.out, &inputs, args.force).map_err(CliError)?;
    if !args.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        return Err(CliError(format!("the output must be a .png file ({})", args.out.display())));
    }
    let doc = match &args.annotations {
        Some(p) => Some(crate::annotation::io::load(p).map_err(|e| CliError(format!("{e} ({})", p.display())))?),
        None => None,
    };
    let (prior, current) = (load_series(&args.prior)?, load_series(&args.current)?);
    let (pf, cf) = (frame_of(&prior, args.frame, &args.prior)?, frame_of(&current, args.frame, &args.current)?);
    let rgba = compose(pf, cf, doc.as_ref(), args.mode.into());
    let (w, h) = (rgba.width as u32, rgba.height as u32);
    let img = image::RgbaImage::from_raw(w, h, rgba.into_bytes()).ok_or_else(|| CliError("internal: image size mismatch".into()))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    write_atomic(&args.out, &png).map_err(|e| CliError(format!("{e} ({})", args.out.display())))?;
    Ok(())
}

fn frame_of<'a>(s: &'a crate::study::Series, frame: usize, path: &Path) -> Result<&'a crate::study::Frame, CliError> {
    s.frames.get(frame).ok_or_else(|| CliError(format!("no frame {frame} (it has {}) in {}", s.frames.len(), path.display())))
}
