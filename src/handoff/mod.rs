//! Where established connections go after the TC program has handed them
//! to a listener (`bpf_sk_assign_tcp_reqsk`): in kernel mode that is the
//! operator's own server; in proxy mode it is synwall's listener, and
//! [`proxy`] relays the connection to an upstream.

pub mod proxy;
pub mod proxy_protocol;
pub mod repair;
