//! The one integration-test binary: a module per feature, sharing `support`.

mod admission;
mod architecture;
mod browser;
mod cache;
mod cli;
mod concurrency;
mod console;
mod contract;
mod disk;
mod guests;
mod http;
mod isolation;
mod logs;
mod nodes;
mod outcomes;
mod postgres;
mod queue;
mod remote;
mod replay;
mod schedules;
mod serve;
mod store_conformance;
mod store_copy;
mod support;
mod tls;
