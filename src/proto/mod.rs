//! The sans-IO protocol core: SYN cookies and the handshake. Nothing here
//! reads the clock, does I/O or logs; time, keys and buffers come in as
//! arguments and decisions go out as values.

pub mod cookie;
pub mod handshake;
pub mod time;
