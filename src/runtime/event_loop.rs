//! A node's logic, and the event loop that runs it.
//!
//! [`NodeLogic`] is everything a node decides between its inputs and its
//! outputs, as one deterministic value: it owns the Raft core, the storage (on
//! any [`Dir`]), the load table (through [`Shared`]), the report intake and
//! the waiting note and forget requests. It has no thread, socket or clock of
//! its own: every call is given the time, and the datagrams it wants sent wait
//! in its outbox until the caller takes them. A round is: inputs
//! (`on_inbound`, `on_input`, `on_tick`), then [`NodeLogic::end_round`], which
//! handles the core's `Ready` in the order Raft's safety needs: persist and
//! fsync the hard state and entries, then queue the messages, then apply
//! committed entries, then `advance`. Nothing reaches the outbox before the
//! state it depends on is on disk. Any storage error stops the node:
//! continuing could acknowledge what is not durable.
//!
//! Two shells run it: [`EventLoop`] here (one thread waiting on datagrams from
//! the UDP thread, requests from the HTTP threads and a 10 ms ticker, then
//! sending the outbox over UDP), and the node simulator (`tests/nodesim/`),
//! which runs five of them on `MemDir`s with virtual time, through the same
//! code.

use std::collections::HashMap;
use std::fmt;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use super::forget::{ForgetAction, ForgetReply, ForgetRequests};
use super::intake::ReportIntake;
use super::members::{MemberJob, MemberOp, MemberOutcome, MemberReply};
use super::notes::{NodeState, NoteAction, NoteReply, NoteRequests};
use super::shared::{LoopCounters, MemberView, Shared};
use super::trim;
use super::udp::{self, Inbound};
use crate::locks;
use crate::nodes::Nodes;
use crate::raft::{Entry, EntryKind, Membership, MessageBody, NodeId, Raft, Ready, Role};
use crate::report::Report;
use crate::storage::{Dir, FsDir, Storage, StorageError};
use crate::table::{Change, Command, LoadTable};
use crate::wire::{Datagram, WireError};

/// One logical tick of the core.
pub const TICK: Duration = Duration::from_millis(10);
/// After a long stall (a paused process), catch up at most this many ticks at
/// once: enough to time out an election, not a burst of thousands.
const MAX_CATCH_UP_TICKS: u32 = 50;
/// Inbound datagrams handled per round before the round's single fsync.
const MAX_BATCH: usize = 256;
/// How long a stopping leader waits for its successor to take over.
const HANDOVER_TIMEOUT: Duration = Duration::from_millis(1000);

/// What the HTTP threads hand to the loop.
#[derive(Debug)]
pub enum LoopInput {
    /// A validated load report from a daemon.
    Report(Report),
    /// `PUT /note`: answered on `reply` once applied here, or by `deadline`.
    SetNote {
        text: String,
        reply: NoteReply,
        deadline: Instant,
    },
    /// `GET /note`: answered on `reply` after a read-index round, or by `deadline`.
    ReadNote { reply: NoteReply, deadline: Instant },
    /// Forget `server` (`runtime::forget`): answered on `reply` once a
    /// `Forget` of it is applied here, at once when this node's table has no
    /// such server, or by `deadline`.
    Forget {
        server: String,
        reply: ForgetReply,
        deadline: Instant,
    },
    /// `POST /admin/member` (`runtime::members`): answered on `reply` once
    /// every step of the change committed, at once when it cannot start, or
    /// by `deadline`.
    ChangeMembers {
        op: MemberOp,
        reply: MemberReply,
        deadline: Instant,
    },
}

/// The channels the loop listens on.
pub(crate) struct LoopChannels {
    pub inbound: Receiver<Inbound>,
    pub input: Receiver<LoopInput>,
    /// One message (or the sender dropping) asks the loop to stop.
    pub stop: Receiver<()>,
}

/// Why the loop stopped without being asked to.
#[derive(Debug)]
pub enum RuntimeError {
    Storage(StorageError),
    /// A snapshot from the leader does not decode as a load table.
    Snapshot(WireError),
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Storage(e) => write!(f, "storage failed, stopping: {e}"),
            RuntimeError::Snapshot(e) => {
                write!(f, "received a snapshot that is not a load table: {e}")
            }
        }
    }
}

impl std::error::Error for RuntimeError {}

impl From<StorageError> for RuntimeError {
    fn from(e: StorageError) -> Self {
        RuntimeError::Storage(e)
    }
}

/// How often a node tells one peer its configuration's members at most.
pub(super) const MEMBERS_RESEND: Duration = Duration::from_secs(1);
/// Names looked at in one `Datagram::Members` (a configuration holds at most
/// `raft::MAX_MEMBERS`).
const MEMBERS_LEARNED_MAX: usize = crate::raft::MAX_MEMBERS;

/// A node's logic; see the module docs.
pub struct NodeLogic<D: Dir = FsDir> {
    pub(super) raft: Raft,
    pub(super) storage: Storage<D>,
    pub(super) shared: Arc<Shared>,
    /// Datagrams to send, in order, with their receiver; taken by the shell.
    pub(super) outbox: Vec<(NodeId, Datagram)>,
    pub(super) intake: ReportIntake,
    /// Note writes and reads waiting on Raft.
    pub(super) notes: NoteRequests,
    /// Forget requests waiting for their entry to be applied here.
    pub(super) forgets: ForgetRequests,
    /// When the last tick was given to the core, to give one per 10 ms of real
    /// time even when the ticker's messages were coalesced.
    pub(super) last_tick: Instant,
    /// When a valid datagram last came from each node, by Raft id (only ids
    /// of the address book reach the loop, so it stays bounded).
    pub(super) heard_from: HashMap<NodeId, Instant>,
    /// When this node last sent each peer its configuration's members
    /// (`Datagram::Members`), at most one per [`MEMBERS_RESEND`] (bounded
    /// as `heard_from` is).
    pub(super) told_members: HashMap<NodeId, Instant>,
    /// The configuration the address book and the view were last built from.
    pub(super) known_membership: Membership,
    /// The membership change being carried out (one at a time).
    pub(super) member_job: Option<MemberJob>,
    /// A node counts as reachable when heard from within this window.
    pub(super) reach_window: Duration,
    /// (role, term, leader) as last logged.
    pub(super) logged: (Role, u64, Option<NodeId>),
    /// The commit index the node restarted with: entries up to it are a replay
    /// of history, so their liveness changes are logged at debug, not info.
    pub(super) replay_until: u64,
    /// A compaction freed memory that has not been handed back to the OS yet,
    /// and when that was last done (see `runtime::trim`).
    pub(super) trim_due: bool,
    pub(super) last_trim: Instant,
}

/// The runtime's shell around [`NodeLogic`]: one thread, the UDP socket.
pub(crate) struct EventLoop {
    pub(super) logic: NodeLogic<FsDir>,
    pub(super) socket: UdpSocket,
}

impl EventLoop {
    /// Runs until asked to stop (Ok) or until storage fails (Err).
    pub fn run(mut self, channels: LoopChannels) -> Result<(), RuntimeError> {
        let ticker = crossbeam_channel::tick(TICK);
        let mut stop = channels.stop;
        // A channel whose senders are all gone would be ready forever; it is
        // swapped for one that never is, so the select cannot spin.
        let mut inbound = channels.inbound;
        let mut input = channels.input;
        let mut stopping_since: Option<Instant> = None;
        let logic = &mut self.logic;
        logic.publish(Instant::now());
        loop {
            select! {
                recv(inbound) -> got => match got {
                    Ok(datagram) => {
                        let now = Instant::now();
                        logic.on_inbound(now, datagram);
                        for more in inbound.try_iter().take(MAX_BATCH) {
                            logic.on_inbound(now, more);
                        }
                    }
                    Err(_) => inbound = crossbeam_channel::never(),
                },
                recv(input) -> got => match got {
                    Ok(first) => {
                        let now = Instant::now();
                        logic.on_input(now, first);
                        for more in input.try_iter().take(MAX_BATCH) {
                            logic.on_input(now, more);
                        }
                    }
                    Err(_) => input = crossbeam_channel::never(),
                },
                recv(ticker) -> _ => {
                    // What peers sent while this loop stood still first: a
                    // leader's CheckQuorum counts those answers.
                    let now = Instant::now();
                    for datagram in inbound.try_iter().take(MAX_BATCH) {
                        logic.on_inbound(now, datagram);
                    }
                    logic.on_tick(now);
                }
                recv(stop) -> _ => {
                    stop = crossbeam_channel::never();
                    stopping_since = Some(Instant::now());
                    logic.hand_over_leadership();
                }
            }
            let result = logic.end_round(Instant::now());
            // What was queued before a storage error was persisted first, and
            // is sent; nothing after it was queued.
            for (to, datagram) in logic.outbox.drain(..) {
                udp::send(&self.socket, &logic.shared, to, &datagram);
            }
            result?;
            if let Some(since) = stopping_since {
                if logic.raft.role() != Role::Leader || since.elapsed() > HANDOVER_TIMEOUT {
                    return Ok(());
                }
            }
        }
    }
}

impl<D: Dir> NodeLogic<D> {
    /// Ends a round of inputs: proposals and read rounds of this round go out
    /// with its one fsync; then the core's `Ready` is handled and the view
    /// published.
    pub fn end_round(&mut self, now: Instant) -> Result<(), RuntimeError> {
        let actions = self.notes.start(now, self.note_state());
        self.do_note_actions(actions);
        let (me, leader) = (self.shared.me, self.raft.leader());
        let actions = self.forgets.start(now, me, leader);
        self.do_forget_actions(actions);
        self.handle_ready(now)?;
        self.publish(now);
        Ok(())
    }

    /// The datagrams queued since the last call, with their receivers.
    pub fn take_outbox(&mut self) -> Vec<(NodeId, Datagram)> {
        std::mem::take(&mut self.outbox)
    }

    /// Queues `datagram` for node `to`.
    pub(super) fn send(&mut self, to: NodeId, datagram: Datagram) {
        self.outbox.push((to, datagram));
    }

    /// The core, for the simulator's oracle and tests.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The view the HTTP side reads: the table, the metrics.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn on_inbound(&mut self, now: Instant, inbound: Inbound) {
        self.heard_from.insert(inbound.from, now);
        match inbound.datagram {
            Datagram::Raft(message) => {
                if matches!(message.body, MessageBody::RequestVote { .. }) {
                    self.tell_members(now, inbound.from);
                }
                self.raft.step(message);
            }
            Datagram::Reports { reports, .. } => {
                for report in reports.into_iter().filter(|r| r.validate().is_ok()) {
                    self.take_report(now, report);
                }
            }
            Datagram::ProposeNote {
                from,
                term,
                request,
                text,
            } => {
                let action = (self.notes).forwarded(self.note_state(), from, term, request, text);
                self.do_note_actions(action);
            }
            Datagram::NoteRefused { from, request } => self.notes.refused_by(from, request),
            Datagram::ForgetServer { from, server } => {
                log::debug!("node {from} asks to forget server {server}");
                let action = ForgetRequests::forwarded(self.raft.role(), server);
                self.do_forget_actions(action);
            }
            Datagram::Members { members, .. } => self.learn_addresses(inbound.from, members),
        }
    }

    /// A peer asks for votes while this node knows a leader: the peer has not
    /// heard that leader, perhaps because it lacks the address of a member
    /// added while it was away (its datagrams are dropped at its door). Tell
    /// it the nodes of this node's address book (the configuration's members
    /// and nodes.txt's), at most once per [`MEMBERS_RESEND`].
    fn tell_members(&mut self, now: Instant, to: NodeId) {
        if self.raft.leader().is_none_or(|leader| leader == to) {
            return;
        }
        if (self.told_members.get(&to)).is_some_and(|t| now.duration_since(*t) < MEMBERS_RESEND) {
            return;
        }
        self.told_members.insert(to, now);
        let members = (locks::read(&self.shared.book).entries().iter())
            .map(|e| (e.id.clone(), e.addr.clone()))
            .collect();
        let from = self.shared.me;
        self.send(to, Datagram::Members { from, members });
    }

    /// A peer named the nodes it knows (`tell_members`): while this node knows
    /// no leader, those the address book lacks join it (the book's own
    /// entries win; at most [`MEMBERS_LEARNED_MAX`] names are looked at), so
    /// their datagrams are admitted and the leader among them can bring this
    /// node's log, and its configuration, up to date. The next configuration
    /// this node adopts rebuilds the book from its own log.
    fn learn_addresses(&mut self, from: NodeId, members: Vec<(String, String)>) {
        if self.raft.leader().is_some() {
            return;
        }
        let mut new = Vec::new();
        {
            let book = locks::read(&self.shared.book);
            for (name, addr) in members.into_iter().take(MEMBERS_LEARNED_MAX) {
                if book.raft_id_of(&name).is_some() {
                    continue;
                }
                // Resolved outside the write lock (a host name may take a while).
                match crate::nodes::entry(&name, &addr) {
                    Ok(e) if book.raft_id_at(e.socket).is_none() => new.push(e),
                    Ok(_) => log::debug!("member {name} named by {from}: address taken"),
                    Err(reason) => log::debug!("member {name} named by {from}: {reason}"),
                }
            }
        }
        if new.is_empty() {
            return;
        }
        let mut book = locks::write(&self.shared.book);
        let mut entries = book.entries().to_vec();
        let names: Vec<String> = new.iter().map(|e| format!("{} {}", e.id, e.addr)).collect();
        for e in new {
            if entries.len() < 2 * crate::raft::MAX_MEMBERS
                && entries.iter().all(|x| x.id != e.id && x.socket != e.socket)
            {
                entries.push(e);
            }
        }
        *book = Nodes::from_entries(entries);
        drop(book);
        let by = self
            .shared
            .name_of(from)
            .unwrap_or_else(|| from.to_string());
        log::info!(
            "no leader known; {by} names members this node did not know, now admitted: {}",
            names.join(", ")
        );
    }

    pub fn on_input(&mut self, now: Instant, input: LoopInput) {
        match input {
            LoopInput::Report(report) => self.take_report(now, report),
            LoopInput::SetNote {
                text,
                reply,
                deadline,
            } => self.notes.add_write(text, reply, deadline),
            LoopInput::ReadNote { reply, deadline } => self.notes.add_read(reply, deadline),
            LoopInput::Forget {
                server,
                reply,
                deadline,
            } => {
                let table = self.shared.table();
                self.forgets.add(server, reply, deadline, &table);
            }
            LoopInput::ChangeMembers {
                op,
                reply,
                deadline,
            } => {
                if self.member_job.is_some() {
                    let busy = "another membership change is in progress on this node".into();
                    let _ = reply.try_send(MemberOutcome::Busy(busy));
                    return;
                }
                match MemberJob::plan(&self.raft, op, reply, deadline) {
                    Ok(mut job) => {
                        if !job.progress(&mut self.raft, now) {
                            self.member_job = Some(job);
                        }
                    }
                    Err((reply, outcome)) => {
                        let _ = reply.try_send(outcome);
                    }
                }
            }
        }
    }

    fn take_report(&mut self, now: Instant, report: Report) {
        let table = self.shared.table();
        self.intake.receive(report, &table, now);
    }

    /// Gives the core one tick per elapsed 10 ms, then moves pending reports on:
    /// the leader proposes them as one entry (and any MarkDead or Forget that
    /// is due), a follower forwards them to the leader.
    pub fn on_tick(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_tick);
        let ticks = (elapsed.as_millis() / TICK.as_millis()) as u32;
        self.last_tick += TICK * ticks;
        // A leader catches up less than one CheckQuorum window: two checks in
        // a row with no answer read between them would depose it for a stall
        // of its own (seen under a load average of 10, no fault at all).
        let most = match self.raft.role() {
            Role::Leader => self
                .raft
                .config()
                .election_ticks_min
                .saturating_sub(1)
                .max(1) as u32,
            _ => MAX_CATCH_UP_TICKS,
        };
        for _ in 0..ticks.min(most) {
            self.raft.tick();
        }
        if ticks > MAX_CATCH_UP_TICKS {
            // This node stood still (SIGSTOP, a suspended machine): the servers'
            // silence in that time is no evidence that they died.
            let table = self.shared.table();
            self.intake.give_grace(&table, now);
        }
        // On the tick rather than right after the compaction, so that the
        // last compaction of a burst is trimmed too, a second later at most.
        if self.trim_due && now.duration_since(self.last_trim) >= trim::TRIM_INTERVAL {
            trim::release_free_memory();
            (self.trim_due, self.last_trim) = (false, now);
        }
        if self.raft.role() == Role::Leader {
            self.propose_reports(now);
        } else if let Some(leader) = self.raft.leader() {
            self.forward_reports(leader);
        }
        if !self.notes.is_empty() {
            self.notes.tick(now, &self.shared.counters);
        }
        if let Some(job) = self.member_job.as_mut() {
            if job.progress(&mut self.raft, now) {
                self.member_job = None;
            }
        }
    }

    fn propose_reports(&mut self, now: Instant) {
        let (batch, dead, forgotten) = {
            let table = self.shared.table();
            (
                self.intake.take_batch(&table),
                self.intake.due_dead(&table, now),
                self.intake.due_forget(&table, now),
            )
        };
        let commands = (!batch.is_empty())
            .then_some(Command::Reports(batch))
            .into_iter()
            .chain(dead)
            .chain(forgotten);
        for command in commands {
            if let Err(e) = self.raft.propose(command.encode()) {
                // Reports come again within a second; a MarkDead is re-proposed.
                log::debug!("proposal dropped: {e:?}");
            }
        }
    }

    fn forward_reports(&mut self, leader: NodeId) {
        if !self.intake.has_pending() {
            return;
        }
        let reports = self.intake.take_batch(&self.shared.table());
        log::debug!(
            "forwarding {} reports to {}",
            reports.len(),
            self.name(Some(leader))
        );
        let datagram = Datagram::Reports {
            from: self.shared.me,
            reports,
        };
        self.send(leader, datagram);
    }

    /// On SIGTERM a leader hands over to its most up-to-date follower, so the
    /// cluster does not wait an election timeout for a successor.
    pub(crate) fn hand_over_leadership(&mut self) {
        if self.raft.role() != Role::Leader {
            return;
        }
        if let Some(target) = self.raft.best_transfer_target() {
            let name = self.name(Some(target));
            match self.raft.transfer_leader(target) {
                Ok(()) => log::info!("stopping: handing leadership to {name}"),
                Err(e) => log::warn!("stopping: cannot hand leadership to {name}: {e:?}"),
            }
        }
    }

    /// Persist, fsync, send, apply, advance; then compact when the core asks.
    /// Bounded: a core that always has more ready cannot starve the select.
    fn handle_ready(&mut self, now: Instant) -> Result<(), RuntimeError> {
        for _ in 0..16 {
            if !self.raft.has_ready() {
                break;
            }
            let ready = self.raft.ready();
            self.persist(&ready)?;
            let Ready {
                snapshot,
                messages,
                committed_entries,
                read_states,
                read_failures,
                ..
            } = ready;
            for message in messages {
                self.send(message.to, Datagram::Raft(message));
            }
            if let Some(snapshot) = snapshot {
                let table =
                    LoadTable::restore(&snapshot.data, now).map_err(RuntimeError::Snapshot)?;
                self.forgets.snapshot_installed(&table);
                self.intake.snapshot_installed(&table);
                *locks::write(&self.shared.table) = table;
                log::info!("installed a snapshot at index {}", snapshot.meta.index);
                (self.notes).snapshot_installed(snapshot.meta.term, &self.shared.counters);
            }
            let (note_writes, forgotten) = self.apply(now, &committed_entries);
            self.forgets.applied(&forgotten);
            for server in &forgotten {
                self.intake.forgotten(server);
            }
            let last_term = committed_entries.last().map(|e| e.term);
            let counters = &self.shared.counters;
            self.notes.applied(&note_writes, last_term, counters);
            self.notes.read_results(&read_states, &read_failures);
            let (shared, applied) = (&self.shared, self.raft.applied_index());
            let note = || shared.table().note().to_string();
            self.notes.finish_reads(applied, note, counters);
            self.raft.advance();
            self.maybe_compact()?;
        }
        Ok(())
    }

    fn persist(&mut self, ready: &Ready) -> Result<(), StorageError> {
        if let Some(snapshot) = &ready.snapshot {
            self.storage.apply_snapshot(snapshot)?;
        }
        if !ready.entries.is_empty() {
            self.storage.append(&ready.entries)?;
        }
        if let Some(hard_state) = ready.hard_state {
            self.storage.set_hard_state(hard_state)?;
        }
        if ready.must_persist() {
            self.storage.sync()?;
        }
        Ok(())
    }

    /// Applies committed entries to the table; returns the request id and index
    /// of every note write among them, for the writes waiting on them, and the
    /// server of every `Forget`, for the forget requests.
    fn apply(&mut self, now: Instant, entries: &[Entry]) -> (Vec<(u64, u64)>, Vec<String>) {
        if entries.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let mut changes = Vec::new();
        let mut note_writes = Vec::new();
        let mut forgotten = Vec::new();
        {
            let mut table = locks::write(&self.shared.table);
            for entry in entries.iter().filter(|e| e.kind == EntryKind::Command) {
                match Command::decode(&entry.data) {
                    Ok(command) => {
                        match &command {
                            Command::SetNote { request, .. } => {
                                note_writes.push((*request, entry.index))
                            }
                            Command::Forget { server } => forgotten.push(server.clone()),
                            _ => {}
                        }
                        changes.extend(table.apply(&command, now));
                    }
                    // Every node skips the same undecodable entry, so the tables
                    // stay equal; only a newer version's command could be one.
                    Err(e) => log::warn!("entry {} skipped: {e}", entry.index),
                }
            }
        }
        self.shared
            .counters
            .entries_applied
            .fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let replaying = entries.last().is_some_and(|e| e.index <= self.replay_until);
        let level = if replaying {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        for change in changes {
            match change {
                Change::Alive(server) => log::log!(level, "server {server} is alive"),
                Change::Dead(server) => log::log!(level, "server {server} marked dead"),
                Change::Forgotten(server) => log::log!(level, "server {server} forgotten"),
            }
        }
        (note_writes, forgotten)
    }

    fn maybe_compact(&mut self) -> Result<(), StorageError> {
        if !self.raft.wants_snapshot() {
            return Ok(());
        }
        let applied = self.raft.applied_index();
        let data = self.shared.table().snapshot();
        if let Some(snapshot) = self.raft.compact(applied, data) {
            self.storage.apply_snapshot(&snapshot)?;
            LoopCounters::add(&self.shared.counters.snapshots_taken);
            log::debug!("compacted the log up to index {applied}");
            self.trim_due = true;
        }
        Ok(())
    }

    /// Updates the view the HTTP threads read, and logs role and term changes.
    fn publish(&mut self, now: Instant) {
        let role = self.raft.role();
        let term = self.raft.term();
        let leader = self.raft.leader();
        if (role, term, leader) != self.logged {
            self.log_transition(now, role, term, leader);
        }
        // The book's lock is taken and released before the view's.
        let members = (*self.raft.membership() != self.known_membership).then(|| {
            self.known_membership = self.raft.membership().clone();
            self.adopt_membership()
        });
        let mut view = locks::write(&self.shared.view);
        view.role = role;
        view.term = term;
        view.leader = leader;
        view.commit_index = self.raft.commit_index();
        view.applied_index = self.raft.applied_index();
        (self.shared.counters.snapshots_refused).store(
            self.raft.snapshots_refused(),
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Some(members) = members {
            view.members = members;
        }
        self.fill_reachability(now, role, leader, &mut view.members);
    }

    /// A new configuration is in force: the address book becomes its members
    /// (their addresses resolved) plus nodes.txt's nodes it does not name, and
    /// the view lists its members. A member whose address does not resolve
    /// keeps nodes.txt's address if it has one (and is logged).
    fn adopt_membership(&self) -> Vec<MemberView> {
        let membership = &self.known_membership;
        let mut entries = Vec::new();
        for m in membership.members() {
            match crate::nodes::entry(&m.name, &m.addr) {
                Ok(e) => entries.push(e),
                Err(reason) => {
                    log::warn!("member {}: {reason}", m.name);
                    if let Some(e) = self.shared.nodes.entries().iter().find(|e| e.id == m.name) {
                        entries.push(e.clone());
                    }
                }
            }
        }
        for e in self.shared.nodes.entries() {
            if membership.by_name(&e.id).is_none() {
                entries.push(e.clone());
            }
        }
        let differs: Vec<&str> = self
            .shared
            .nodes
            .entries()
            .iter()
            .filter(|e| membership.by_name(&e.id).is_none_or(|m| m.addr != e.addr))
            .map(|e| e.id.as_str())
            .chain(
                membership
                    .members()
                    .iter()
                    .filter(|m| self.shared.nodes.raft_id_of(&m.name).is_none())
                    .map(|m| m.name.as_str()),
            )
            .collect();
        if differs.is_empty() {
            log::info!("configuration: {membership}");
        } else {
            log::info!(
                "configuration: {membership} (the log's; nodes.txt differs on {}: the log is followed)",
                differs.join(", ")
            );
        }
        *locks::write(&self.shared.book) = Nodes::from_entries(entries);
        // nodes.txt's order first (what people wrote, and what the page and
        // `raftlb status` showed before), then the members it lacks by name.
        let position = |name: &str| {
            let listed = self.shared.nodes.entries().iter();
            listed
                .clone()
                .position(|e| e.id == name)
                .unwrap_or(usize::MAX)
        };
        let mut members: Vec<MemberView> = membership
            .members()
            .iter()
            .map(|m| MemberView {
                id: m.id,
                name: m.name.clone(),
                addr: m.addr.clone(),
                voter: m.voter,
                reachable: None,
            })
            .collect();
        members.sort_by(|a, b| (position(&a.name), &a.name).cmp(&(position(&b.name), &b.name)));
        members
    }

    fn log_transition(&mut self, now: Instant, role: Role, term: u64, leader: Option<NodeId>) {
        let (old_role, old_term, old_leader) = self.logged;
        self.logged = (role, term, leader);
        if leader != old_leader || role != old_role {
            self.intake.on_leader_change();
        }
        match role {
            Role::Leader if old_role != Role::Leader => {
                log::info!("became leader in term {term}");
                let table = self.shared.table();
                self.intake.give_grace(&table, now);
            }
            Role::Candidate if old_role != Role::Candidate || old_term != term => {
                LoopCounters::add(&self.shared.counters.elections);
                log::info!("candidate in term {term}: election started");
            }
            Role::PreCandidate => log::debug!("pre-candidate in term {term}"),
            Role::Follower if leader.is_some() => {
                log::info!("follower in term {term}, leader {}", self.name(leader))
            }
            Role::Follower if old_term != term || old_role != Role::Follower => {
                log::info!("follower in term {term}, no leader yet")
            }
            _ => {}
        }
    }

    /// Writes into `out` (one slot per node, the view's own vector, so the hot
    /// path allocates nothing) whether each node was heard from recently.
    fn fill_reachability(
        &self,
        now: Instant,
        role: Role,
        leader: Option<NodeId>,
        out: &mut [MemberView],
    ) {
        let me = self.shared.me;
        for member in out.iter_mut() {
            let id = member.id;
            let recent = self
                .heard_from
                .get(&id)
                .is_some_and(|&t| now.saturating_duration_since(t) < self.reach_window);
            member.reachable = if id == me {
                Some(true)
            } else if role == Role::Leader || Some(id) == leader {
                Some(recent)
            } else {
                None
            };
        }
    }

    fn name(&self, id: Option<NodeId>) -> String {
        id.and_then(|id| self.shared.name_of(id))
            .unwrap_or_else(|| "none".into())
    }
}

/// The note requests' actions, carried out (`notes::NoteRequests` decides).
impl<D: Dir> NodeLogic<D> {
    fn note_state(&self) -> NodeState {
        NodeState {
            me: self.shared.me,
            role: self.raft.role(),
            term: self.raft.term(),
            leader: self.raft.leader(),
        }
    }

    /// Does each action in order; a proposal's outcome goes back to the note
    /// requests at once, and what they answer (a refusal to a follower) is done
    /// too.
    fn do_note_actions(&mut self, actions: impl IntoIterator<Item = NoteAction>) {
        for action in actions {
            match action {
                NoteAction::Propose { proposal, command } => {
                    let term = match self.raft.propose(command.encode()) {
                        Ok((_, term)) => Some(term),
                        Err(e) => {
                            // Handing leadership over: the successor takes it.
                            log::debug!("note write waits: {e:?}");
                            None
                        }
                    };
                    let me = self.shared.me;
                    if let Some(then) = self.notes.proposed(proposal, term, me) {
                        self.do_note_actions([then]);
                    }
                }
                NoteAction::Send { to, datagram } => self.send(to, datagram),
                NoteAction::ReadIndex(ctx) => self.raft.read_index(ctx),
            }
        }
    }
}

/// The forget requests' actions, carried out (`forget::ForgetRequests` decides).
impl<D: Dir> NodeLogic<D> {
    fn do_forget_actions(&mut self, actions: impl IntoIterator<Item = ForgetAction>) {
        for action in actions {
            match action {
                ForgetAction::Propose(command) => {
                    if let Err(e) = self.raft.propose(command.encode()) {
                        log::debug!("forget proposal dropped, sent again later: {e:?}");
                    }
                }
                ForgetAction::Send { to, datagram } => self.send(to, datagram),
            }
        }
    }
}
