//! Keyboard focus on X11 without a window manager. winit asks the window manager for focus
//! (`_NET_ACTIVE_WINDOW`), which nobody answers on a bare X server (Xvfb, a kiosk), so after a
//! click on a pane the keys would still go nowhere; the X input focus is then set directly.

/// Gives the window the X input focus (nothing on Wayland, other platforms, or headless).
#[cfg(target_os = "linux")]
pub fn take(frame: &eframe::Frame) {
    use raw_window_handle::{HasWindowHandle, RawWindowHandle};
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConnectionExt, InputFocus};

    let Ok(handle) = frame.window_handle() else { return };
    let window = match handle.as_raw() {
        RawWindowHandle::Xlib(h) => h.window as u32,
        RawWindowHandle::Xcb(h) => h.window.get(),
        _ => return,
    };
    let Ok((conn, _)) = x11rb::connect(None) else { return };
    if let Ok(cookie) = conn.set_input_focus(InputFocus::PARENT, window, x11rb::CURRENT_TIME)
        && let Err(e) = cookie.check()
    {
        log::debug!("X input focus not set: {e}");
    }
    let _ = conn.flush();
}

#[cfg(not(target_os = "linux"))]
pub fn take(_frame: &eframe::Frame) {}
