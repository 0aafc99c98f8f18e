//! attach = "libxdp": the XDP program as one program of libxdp's
//! multi-program dispatcher, the convention xdp-loader and xdp-filter
//! follow, so synwall shares an interface with other XDP programs.
//!
//! The dispatcher loads its programs as extensions (BPF_PROG_TYPE_EXT) of
//! itself, so the program cannot be the skeleton's, which is loaded as
//! plain XDP. A second object is opened from the same ELF, every map of it
//! reusing the skeleton's (so keys, settings, counters and sockets are
//! shared), with only the dispatcher's variant of the XDP program
//! (`xdp_synwall_ext`) set to load; libxdp loads and links it. The
//! dispatcher's links are pinned in bpffs, so the program outlives a
//! synwall that dies without detaching it: the heartbeat (bpf/maps.h)
//! makes it pass everything then, and [`remove_stale`] takes it out on the
//! next start.

use std::os::fd::AsFd;
use std::ptr::NonNull;

use libbpf_rs::skel::Skel;
use libbpf_rs::{AsRawLibbpf, MapCore};

use super::XdpMode;
use super::{LinkInfo, XdpError, skel::SynwallSkel};

/// The compiled object (build.rs), the same the skeleton embeds.
const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/synwall.bpf.o"));

/// The XDP program's name, as the dispatcher lists it: the variant with no
/// call that moves packet data, which every libxdp's dispatcher takes
/// (bpf/synwall.bpf.c, `xdp_synwall_ext`).
pub const PROGRAM_NAME: &str = "xdp_synwall_ext";

/// What synwall's program was called in dispatchers before: a program of
/// that name left by an older synwall is stale too.
const OLD_PROGRAM_NAME: &str = "xdp_synwall";

/// Our program in an interface's dispatcher; detached on drop.
pub struct DispatcherProgram {
    prog: NonNull<libxdp_sys::xdp_program>,
    /// The object libxdp loaded the program from; libxdp borrows it.
    _object: libbpf_rs::OpenObject,
    ifindex: u32,
    mode: libxdp_sys::xdp_attach_mode,
}

// SAFETY: the xdp_program is used only through &self/&mut self methods
// that libxdp allows from any thread, one call at a time; nothing else
// holds the pointer.
unsafe impl Send for DispatcherProgram {}
// SAFETY: the only &self calls (id, is_attached, multiprog queries) read
// state libxdp does not mutate.
unsafe impl Sync for DispatcherProgram {}

impl std::fmt::Debug for DispatcherProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DispatcherProgram(ifindex {})", self.ifindex)
    }
}

fn libxdp_mode(mode: XdpMode) -> &'static [(libxdp_sys::xdp_attach_mode, &'static str)] {
    const NATIVE: (libxdp_sys::xdp_attach_mode, &str) =
        (libxdp_sys::xdp_attach_mode_XDP_MODE_NATIVE, "native");
    const GENERIC: (libxdp_sys::xdp_attach_mode, &str) =
        (libxdp_sys::xdp_attach_mode_XDP_MODE_SKB, "generic");
    match mode {
        XdpMode::Native => &[NATIVE],
        XdpMode::Generic => &[GENERIC],
        XdpMode::Auto => &[NATIVE, GENERIC],
    }
}

/// Opens the second object, its maps reusing `skel`'s and only the XDP
/// program to be loaded.
fn open_extension(skel: &SynwallSkel<'static>) -> Result<libbpf_rs::OpenObject, XdpError> {
    // The skeleton's object name, so that internal maps (.rodata, ...) are
    // named alike.
    let mut builder = libbpf_rs::ObjectBuilder::default();
    builder.name("synwall_bpf").map_err(XdpError::Load)?;
    let mut open = builder.open_memory(OBJECT).map_err(XdpError::Load)?;
    let loaded = skel.object();
    for mut map in open.maps_mut() {
        let name = map.name().to_owned();
        let Some(have) = loaded.maps().find(|m| m.name() == name) else {
            return Err(XdpError::Missing(format!(
                "map {} of the dispatcher's copy is not in the loaded program",
                name.to_string_lossy()
            )));
        };
        map.reuse_fd(have.as_fd()).map_err(XdpError::Load)?;
    }
    for mut prog in open.progs_mut() {
        if prog.name() != PROGRAM_NAME {
            prog.set_autoload(false);
        }
    }
    Ok(open)
}

/// The libxdp program of `object`'s extension (`xdp_synwall_ext`), not
/// yet attached; `ifindex` is for the error.
fn create_program(
    object: &libbpf_rs::OpenObject,
    ifindex: u32,
) -> Result<NonNull<libxdp_sys::xdp_program>, XdpError> {
    let raw = object
        .as_libbpf_object()
        .as_ptr()
        .cast::<libxdp_sys::bpf_object>();
    let name = c"xdp_synwall_ext";
    debug_assert_eq!(name.to_str(), Ok(PROGRAM_NAME));
    // SAFETY: zeroed opts are libxdp's defaults; the size field says
    // which fields this caller knows.
    let mut opts: libxdp_sys::xdp_program_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libxdp_sys::xdp_program_opts>();
    opts.obj = raw;
    opts.prog_name = name.as_ptr();
    // SAFETY: `opts` names the open bpf_object that `object` owns and
    // keeps alive as long as the xdp_program (the caller keeps both in
    // one DispatcherProgram); libxdp borrows it (it does not close it) and copies the
    // program's name. The program is picked by name: both XDP programs
    // are in section "xdp".
    let prog = unsafe { libxdp_sys::xdp_program__create(&mut opts) };
    // SAFETY: libxdp_get_error reads only the pointer's value.
    let err = unsafe { libxdp_sys::libxdp_get_error(prog.cast()) };
    let prog = NonNull::new(prog)
        .filter(|_| err == 0)
        .ok_or_else(|| XdpError::Attach {
            what: "XDP (libxdp): opening the program",
            ifindex,
            source: match err {
                0 => std::io::Error::last_os_error(),
                e => std::io::Error::from_raw_os_error(-(e as i32)),
            },
        })?;
    Ok(prog)
}

impl DispatcherProgram {
    /// Adds the program to `ifindex`'s dispatcher (creating it if there
    /// is none), in native mode or generic as `mode` allows.
    pub fn attach(
        skel: &SynwallSkel<'static>,
        ifindex: u32,
        mode: XdpMode,
    ) -> Result<(DispatcherProgram, &'static str), XdpError> {
        let object = open_extension(skel)?;
        let prog = create_program(&object, ifindex)?;
        let mut last = 0;
        for &(m, name) in libxdp_mode(mode) {
            // SAFETY: `prog` is the live xdp_program made above; libxdp
            // loads it as an extension of the dispatcher and links it.
            last = unsafe { libxdp_sys::xdp_program__attach(prog.as_ptr(), ifindex as i32, m, 0) };
            if last == 0 {
                let attached = DispatcherProgram {
                    prog,
                    _object: object,
                    ifindex,
                    mode: m,
                };
                return Ok((attached, name));
            }
        }
        // SAFETY: the program was not attached; it is ours to close.
        unsafe { libxdp_sys::xdp_program__close(prog.as_ptr()) };
        let what = if last == -libc::EBUSY {
            "XDP (libxdp dispatcher): the interface has an XDP program outside a dispatcher \
             (attached without libxdp, or where the kernel refused the dispatcher); unload it, \
             or load it through libxdp,"
        } else {
            "XDP (libxdp dispatcher)"
        };
        Err(XdpError::Attach {
            what,
            ifindex,
            source: std::io::Error::from_raw_os_error(-last),
        })
    }

    /// Our program's id and the dispatcher's, and whether the program is
    /// still in the dispatcher of its interface.
    pub fn info(&self) -> LinkInfo {
        // SAFETY: `self.prog` is live until drop.
        let prog_id = unsafe { libxdp_sys::xdp_program__id(self.prog.as_ptr()) };
        let (id, here) = match Dispatcher::of(self.ifindex) {
            // libxdp fell back to attaching the program alone.
            Some(d) if d.legacy => (0, d.main_id() == prog_id),
            Some(d) => (d.main_id(), d.programs().any(|(_, id)| id == prog_id)),
            None => (0, false),
        };
        LinkInfo {
            id,
            prog_id,
            ifindex: if here { self.ifindex } else { 0 },
        }
    }
}

impl Drop for DispatcherProgram {
    fn drop(&mut self) {
        // SAFETY: `self.prog` is live and attached to `ifindex` in `mode`;
        // after detaching, it is closed exactly once, before the object
        // it borrows.
        unsafe {
            let rc = libxdp_sys::xdp_program__detach(
                self.prog.as_ptr(),
                self.ifindex as i32,
                self.mode,
                0,
            );
            if rc < 0 {
                tracing::warn!(
                    "detaching from the libxdp dispatcher: {}",
                    std::io::Error::from_raw_os_error(-rc)
                );
            }
            libxdp_sys::xdp_program__close(self.prog.as_ptr());
        }
    }
}

/// An interface's XDP programs as libxdp reads them: a dispatcher and its
/// programs, or (`legacy`) one program attached alone.
pub(super) struct Dispatcher {
    mp: NonNull<libxdp_sys::xdp_multiprog>,
    legacy: bool,
}

impl Dispatcher {
    /// What `ifindex` has attached, if anything.
    fn of(ifindex: u32) -> Option<Dispatcher> {
        // SAFETY: libxdp reads the interface's XDP state and returns a new
        // multiprog or an error pointer.
        let mp = unsafe { libxdp_sys::xdp_multiprog__get_from_ifindex(ifindex as i32) };
        // SAFETY: libxdp_get_error reads only the pointer's value.
        if mp.is_null() || unsafe { libxdp_sys::libxdp_get_error(mp.cast()) } != 0 {
            return None;
        }
        let mp = NonNull::new(mp)?;
        // SAFETY: `mp` is live.
        let legacy = unsafe { libxdp_sys::xdp_multiprog__is_legacy(mp.as_ptr()) };
        Some(Dispatcher { mp, legacy })
    }

    /// True when the programs run in a real dispatcher.
    pub(super) fn is_dispatcher(ifindex: u32) -> bool {
        Dispatcher::of(ifindex).is_some_and(|d| !d.legacy)
    }

    fn main_prog(&self) -> Option<NonNull<libxdp_sys::xdp_program>> {
        // SAFETY: `self.mp` is live; its main program is owned by it.
        NonNull::new(unsafe { libxdp_sys::xdp_multiprog__main_prog(self.mp.as_ptr()) })
    }

    fn main_id(&self) -> u32 {
        // SAFETY: `p` is the multiprog's live main program.
        self.main_prog()
            .map_or(0, |p| unsafe { libxdp_sys::xdp_program__id(p.as_ptr()) })
    }

    /// The component programs (owned by the multiprog); the lone program
    /// when `legacy`.
    fn entries(&self) -> impl Iterator<Item = NonNull<libxdp_sys::xdp_program>> + '_ {
        let lone = if self.legacy { self.main_prog() } else { None };
        let mut prev: *mut libxdp_sys::xdp_program = std::ptr::null_mut();
        let components = std::iter::from_fn(move || {
            if self.legacy {
                return None;
            }
            // SAFETY: `self.mp` is live and `prev` is null or the previous
            // program of this same multiprog.
            let next = unsafe { libxdp_sys::xdp_multiprog__next_prog(prev, self.mp.as_ptr()) };
            prev = next;
            NonNull::new(next)
        });
        lone.into_iter().chain(components)
    }

    /// The component programs: name and id.
    fn programs(&self) -> impl Iterator<Item = (String, u32)> + '_ {
        self.entries().map(|p| {
            // SAFETY: `p` is a live program of the multiprog; its name is
            // a NUL-terminated string it owns.
            unsafe {
                let name = std::ffi::CStr::from_ptr(libxdp_sys::xdp_program__name(p.as_ptr()));
                (
                    name.to_string_lossy().into_owned(),
                    libxdp_sys::xdp_program__id(p.as_ptr()),
                )
            }
        })
    }

    /// Detaches the first program of ours; false when there is none.
    fn remove_one_of_ours(&self, ifindex: u32) -> bool {
        let Some((prog, _)) = self
            .entries()
            .zip(self.programs())
            .find(|(_, (n, _))| n == PROGRAM_NAME || n == OLD_PROGRAM_NAME)
        else {
            return false;
        };
        // SAFETY: `prog` belongs to the live multiprog; libxdp detaches it
        // from the interface's dispatcher, in the dispatcher's mode.
        let rc = unsafe {
            let mode = libxdp_sys::xdp_multiprog__attach_mode(self.mp.as_ptr());
            libxdp_sys::xdp_program__detach(prog.as_ptr(), ifindex as i32, mode, 0)
        };
        if rc < 0 {
            tracing::warn!(
                "cannot remove a stale synwall program from the dispatcher: {}",
                std::io::Error::from_raw_os_error(-rc)
            );
        }
        rc == 0
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        // SAFETY: the multiprog is ours and closed once.
        unsafe { libxdp_sys::xdp_multiprog__close(self.mp.as_ptr()) };
    }
}

/// Takes every program of ours a previous synwall left in `ifindex`'s
/// dispatcher out of it; returns how many.
pub fn remove_stale(ifindex: u32) -> usize {
    let mut removed = 0;
    // Each removal rebuilds the dispatcher: read it again each time.
    while Dispatcher::of(ifindex).is_some_and(|d| d.remove_one_of_ours(ifindex)) {
        removed += 1;
    }
    removed
}
