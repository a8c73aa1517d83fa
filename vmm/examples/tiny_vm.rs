//! Boots a tiny hand-assembled guest with the embedding API: it prints a line on the serial
//! console and powers off; the example pauses and resumes it on the way and prints why it
//! ended. Runs on any KVM host, including PVM.
//!
//! `cargo run -p vmm --example tiny_vm`

use vmm::config::SerialOutput;
use vmm::tiny_guest::Asm;
use vmm::{ExitReason, VmConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("kiln-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kernel = dir.join("tiny.elf");
    let mut guest = Asm::new();
    guest.print("hello from the guest\n").acpi_poweroff();
    std::fs::write(&kernel, guest.into_elf())?;

    let mut config = VmConfig::new(&kernel);
    config.mem_mib = 64;
    config.serial = SerialOutput::Stdout;
    let vm = vmm::start(config)?;
    let handle = vm.handle();
    handle.pause();
    println!("status while paused: {}", handle.status().state);
    handle.resume();
    let reason = vm.wait();
    println!("VM ended: {}", reason.describe());
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(reason, ExitReason::PowerOff);
    Ok(())
}
