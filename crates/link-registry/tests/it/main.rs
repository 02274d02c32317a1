//! The link registry's integration tests: one binary, real databases, a real server on port 0.

mod audit_chain;
mod destinations;
mod faults;
mod feed;
mod grants;
mod harness;
mod installations;
mod keys;
mod ledger;
mod operators;
mod pages;
mod policy;
mod rpc;
mod signing;
mod store;
