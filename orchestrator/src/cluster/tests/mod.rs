//! Tests of the cluster layer: pure launch arguments, run directory, switch wiring, the test
//! API against a real agent, and real `vmm` processes running tiny guests.

mod cluster;
mod launch;
mod run_dir;
mod test_api;
mod vm;
mod vm_support;
