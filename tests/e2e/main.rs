//! End-to-end tests of the whole system: real issuers, registry and broker on loopback.

mod browser;
mod cache;
mod client;
mod cloud;
mod console;
mod explain;
mod faults;
mod flows;
mod fuzz_regressions;
mod github;
mod github_api;
mod grants;
mod harness;
mod hostile;
mod issuer;
mod ledger;
mod logs;
mod metrics;
mod people;
mod policy;
mod proxy;
mod rejections;
mod tls;
mod traces;
