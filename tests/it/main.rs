//! One integration-test binary (each file in tests/ would link the whole Delta stack again).
mod catalogue;
mod cli;
mod common;
mod console;
mod engine;
mod errors;
mod fencing;
mod fixtures;
mod joins;
mod operator;
mod properties;
mod readers;
mod s3;
