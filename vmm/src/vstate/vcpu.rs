//! vCPU threads: the KVM_RUN loop, exit dispatch to the I/O buses, and pause/resume/stop.
//!
//! A vCPU blocked in KVM_RUN (for example in a guest `hlt`) is kicked out with a real-time
//! signal; the controller repeats the kick until every vCPU acknowledges, which closes the
//! race with a signal that lands just before KVM_RUN is entered.
//!
//! A paused vCPU has no I/O exit half done: KVM finishes a port or MMIO access (the value of
//! a read lands in a register, RIP moves past the instruction) only on the next KVM_RUN, so a
//! vCPU that stopped after an I/O exit first runs once with `immediate_exit` set, which
//! completes the access without entering the guest. Only then does it count as parked.
//! Saving state would otherwise capture RIP on an instruction the restored guest repeats.
//!
//! Each vCPU has a command mailbox, served while it is parked: a snapshot asks every vCPU
//! thread for its own state (the thread owns its `VcpuFd`).

use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_device::bus::{MmioAddress, PioAddress};
use vm_device::device_manager::{IoManager, MmioManager, PioManager};

use crate::exit::ExitReason;
use crate::vstate::vcpu_state::{save_vcpu, VcpuState};

/// How long a snapshot waits for a parked vCPU to report its state.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A request to a parked vCPU thread.
pub enum VcpuCommand {
    /// Report the vCPU's whole state.
    Save(std::sync::mpsc::Sender<Result<VcpuState, String>>),
}

/// What a vCPU thread does next.
enum Action {
    Run,
    FinishIo,
    Command(VcpuCommand),
    Leave,
}

/// The signal used to kick vCPUs out of KVM_RUN.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

/// Installs the (empty) kick signal handler; its only job is to interrupt KVM_RUN.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    extern "C" fn noop(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    vmm_sys_util::signal::register_signal_handler(kick_signal(), noop)
}

/// What the vCPUs should be doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Stopping,
}

struct ControlInner {
    state: RunState,
    /// vCPUs currently parked because of a pause.
    parked: usize,
    /// Which vCPUs are parked.
    is_parked: Vec<bool>,
    /// vCPU threads that have left their run loop.
    exited: usize,
    /// Which vCPU threads have left their run loop.
    has_exited: Vec<bool>,
    /// One command mailbox per vCPU.
    mailbox: Vec<Option<VcpuCommand>>,
    /// pthread ids of the vCPU threads, for kicking; emptied before the threads are joined.
    threads: Vec<libc::pthread_t>,
}

/// Shared between the vCPU threads and whoever pauses, resumes or stops them.
pub struct VcpuControl {
    inner: Mutex<ControlInner>,
    changed: Condvar,
    count: usize,
}

impl VcpuControl {
    /// Control for `count` vCPUs, initially running (or paused: a restored VM started with
    /// `--paused`).
    pub fn new(count: usize, initial: RunState) -> Self {
        VcpuControl {
            inner: Mutex::new(ControlInner {
                state: initial,
                parked: 0,
                is_parked: vec![false; count],
                exited: 0,
                has_exited: vec![false; count],
                mailbox: (0..count).map(|_| None).collect(),
                threads: Vec::new(),
            }),
            changed: Condvar::new(),
            count,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ControlInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a started vCPU thread so it can be kicked.
    pub fn add_thread(&self, t: libc::pthread_t) {
        self.lock().threads.push(t);
    }

    /// The current target state.
    pub fn state(&self) -> RunState {
        self.lock().state
    }

    /// Pauses every vCPU and returns once all are parked (or gone).
    pub fn pause(&self) {
        self.transition(RunState::Paused, |c| c.parked + c.exited >= self.count);
    }

    /// Lets paused vCPUs run again.
    pub fn resume(&self) {
        let mut c = self.lock();
        if c.state == RunState::Paused {
            c.state = RunState::Running;
            self.changed.notify_all();
        }
    }

    /// Stops every vCPU and returns once all have left their run loops; after this no thread
    /// is kicked again, so the caller may join them.
    pub fn stop(&self) {
        self.transition(RunState::Stopping, |c| c.exited >= self.count);
        self.lock().threads.clear();
    }

    fn transition(&self, to: RunState, done: impl Fn(&ControlInner) -> bool) {
        let mut c = self.lock();
        if c.state == RunState::Stopping && to != RunState::Stopping {
            return;
        }
        c.state = to;
        self.changed.notify_all();
        while !done(&c) {
            for t in &c.threads {
                // SAFETY: thread ids stay valid until joined, and joining happens only after
                // `stop` has emptied this list under the same lock.
                unsafe { libc::pthread_kill(*t, kick_signal()) };
            }
            c = self
                .changed
                .wait_timeout(c, Duration::from_millis(10))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Asks every (paused) vCPU for its state, in vCPU order.
    pub fn save_all(&self) -> Result<Vec<VcpuState>, String> {
        let mut replies = Vec::with_capacity(self.count);
        {
            let mut c = self.lock();
            if c.state != RunState::Paused {
                return Err("the vCPUs are not paused".into());
            }
            if let Some(id) = c.has_exited.iter().position(|e| *e) {
                return Err(format!("vCPU {id} has stopped; the VM cannot be saved"));
            }
            for slot in c.mailbox.iter_mut() {
                let (tx, rx) = std::sync::mpsc::channel();
                *slot = Some(VcpuCommand::Save(tx));
                replies.push(rx);
            }
            self.changed.notify_all();
        }
        replies
            .into_iter()
            .enumerate()
            .map(|(id, rx)| match rx.recv_timeout(COMMAND_TIMEOUT) {
                Ok(r) => r,
                Err(_) => Err(format!("vCPU {id} did not report its state")),
            })
            .collect()
    }

    /// Called by vCPU `id` before each KVM_RUN: what to do next. Blocks while paused with no
    /// command waiting. `pending_io`: the last exit was an I/O access not yet completed.
    fn next_action(&self, id: usize, pending_io: bool) -> Action {
        let mut c = self.lock();
        loop {
            match c.state {
                RunState::Running | RunState::Stopping => {
                    if c.is_parked[id] {
                        c.is_parked[id] = false;
                        c.parked -= 1;
                    }
                    return if c.state == RunState::Running {
                        Action::Run
                    } else {
                        Action::Leave
                    };
                }
                RunState::Paused => {
                    if pending_io {
                        return Action::FinishIo;
                    }
                    if let Some(cmd) = c.mailbox[id].take() {
                        return Action::Command(cmd);
                    }
                    if !c.is_parked[id] {
                        c.is_parked[id] = true;
                        c.parked += 1;
                        self.changed.notify_all();
                    }
                    c = self.changed.wait(c).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }

    fn mark_exited(&self, id: usize) {
        let mut c = self.lock();
        if c.is_parked[id] {
            c.is_parked[id] = false;
            c.parked -= 1;
        }
        c.has_exited[id] = true;
        c.exited += 1;
        // A command left in the mailbox is dropped, so its sender learns the vCPU is gone.
        c.mailbox[id] = None;
        self.changed.notify_all();
    }
}

/// One vCPU and what it needs to run.
pub struct Vcpu {
    pub id: u8,
    pub fd: VcpuFd,
    pub io: Arc<IoManager>,
    pub control: Arc<VcpuControl>,
    pub exits: Sender<ExitReason>,
    /// KVM's MSR index list (what a saved state carries).
    pub msr_index_list: Arc<[u32]>,
    /// XSAVE bytes per vCPU on this host.
    pub xsave_size: usize,
    /// The last exit was a port or MMIO access KVM completes on the next KVM_RUN.
    pending_io: bool,
}

impl Vcpu {
    /// A vCPU ready to run.
    pub fn new(
        id: u8,
        fd: VcpuFd,
        io: Arc<IoManager>,
        control: Arc<VcpuControl>,
        exits: Sender<ExitReason>,
        vm: &crate::vstate::vm::Vm,
    ) -> Self {
        Vcpu {
            id,
            fd,
            io,
            control,
            exits,
            msr_index_list: vm.msr_index_list().into(),
            xsave_size: vm.xsave_size(),
            pending_io: false,
        }
    }

    /// Runs the guest until the VM stops; reports a guest-caused end on `exits`.
    pub fn run(mut self) {
        loop {
            let result = match self
                .control
                .next_action(usize::from(self.id), self.pending_io)
            {
                Action::Run => self.run_once(),
                Action::FinishIo => self.finish_io(),
                Action::Command(cmd) => {
                    self.execute(cmd);
                    continue;
                }
                Action::Leave => break,
            };
            match result {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    let _ = self.exits.send(reason);
                    break;
                }
                Err(error) => {
                    let regs = dump_registers(&self.fd);
                    let _ = self.exits.send(ExitReason::VcpuError {
                        vcpu: self.id,
                        error,
                        regs,
                    });
                    break;
                }
            }
        }
        self.control.mark_exited(usize::from(self.id));
    }

    fn execute(&mut self, cmd: VcpuCommand) {
        match cmd {
            VcpuCommand::Save(reply) => {
                let state = save_vcpu(&self.fd, self.id, &self.msr_index_list, self.xsave_size)
                    .map_err(|e| e.to_string());
                let _ = reply.send(state);
            }
        }
    }

    /// Completes a pending I/O access without entering the guest (`immediate_exit`).
    fn finish_io(&mut self) -> Result<Option<ExitReason>, String> {
        self.fd.set_kvm_immediate_exit(1);
        let result = self.run_once();
        self.fd.set_kvm_immediate_exit(0);
        result
    }

    /// One KVM_RUN and the handling of its exit. `Ok(Some(_))` ends the VM.
    fn run_once(&mut self) -> Result<Option<ExitReason>, String> {
        let io = &self.io;
        let exit = self.fd.run();
        self.pending_io = matches!(
            exit,
            Ok(VcpuExit::IoOut(..)
                | VcpuExit::IoIn(..)
                | VcpuExit::MmioRead(..)
                | VcpuExit::MmioWrite(..))
        );
        match exit {
            Ok(VcpuExit::IoOut(port, data)) => {
                if io.pio_write(PioAddress(port), data).is_err() {
                    tracing::trace!("write to unclaimed port {port:#x}");
                }
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                if io.pio_read(PioAddress(port), data).is_err() {
                    data.fill(0xff);
                }
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if io.mmio_write(MmioAddress(addr), data).is_err() {
                    tracing::debug!("write to unclaimed MMIO address {addr:#x}");
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if io.mmio_read(MmioAddress(addr), data).is_err() {
                    data.fill(0xff);
                }
            }
            Ok(VcpuExit::Hlt) => return Ok(Some(ExitReason::Halted { vcpu: self.id })),
            Ok(VcpuExit::Shutdown) => {
                return Ok(Some(ExitReason::TripleFault {
                    vcpu: self.id,
                    regs: dump_registers(&self.fd),
                }))
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                return Ok(Some(match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => ExitReason::Reboot {
                        via: "KVM system reset".into(),
                    },
                    _ => ExitReason::PowerOff,
                }))
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return Err(format!(
                    "KVM failed to enter the guest (hardware entry failure reason {reason:#x} on host CPU {cpu})"
                ))
            }
            Ok(VcpuExit::InternalError) => {
                return Err("KVM internal error (often an instruction the hypervisor cannot emulate)".into())
            }
            Ok(other) => return Err(format!("unexpected KVM exit: {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => return Err(format!("KVM_RUN failed: {e}")),
        }
        Ok(None)
    }
}

/// General and segment registers of a vCPU, for post-mortems.
pub fn dump_registers(fd: &VcpuFd) -> String {
    let mut out = String::new();
    match fd.get_regs() {
        Ok(r) => out.push_str(&format!(
            "rip={:#018x} rsp={:#018x} rflags={:#010x}\nrax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\nrsi={:#018x} rdi={:#018x} rbp={:#018x}\nr8={:#018x} r9={:#018x} r10={:#018x} r11={:#018x}\nr12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}\n",
            r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8, r.r9, r.r10,
            r.r11, r.r12, r.r13, r.r14, r.r15
        )),
        Err(e) => out.push_str(&format!("(registers unavailable: {e})\n")),
    }
    if let Ok(s) = fd.get_sregs() {
        out.push_str(&format!(
            "cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x} ss={:#x}",
            s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector, s.ss.selector
        ));
    }
    out
}
