//! Recorded client histories and a linearizability checker for node
//! registration.
//!
//! # Model
//!
//! Every MAC is a **get-or-create register** whose value is a node number:
//! the first `DiscoverNode(mac)` to take effect sets it to a number chosen by
//! the service, every later one (with any idempotency key) returns that same
//! number, and it never changes afterwards. On top of the registers one
//! global constraint: **numbers are fresh** — no two MACs ever hold the same
//! number. (The service's actual policy, "lowest free number", is a
//! refinement of this model and is not checked here; the model is what
//! clients may rely on.)
//!
//! # Checking
//!
//! Linearizability is local (Herlihy & Wing): a history of independent
//! objects is linearizable iff each object's sub-history is. The registers
//! are independent except for freshness, and because values never change
//! once set, freshness does not depend on *when* values were set: it holds
//! in some linearization iff the set values are pairwise distinct. So the
//! check is exactly: (1) every per-MAC sub-history is linearizable for a
//! get-or-create register (Wing–Gong/Lowe search with memoization over
//! `(linearized set, value)` — sub-histories are tiny), and (2) the values
//! held by different MACs (acknowledged results and the final state) are
//! distinct. Both are sound — a reported violation is a real one — and
//! together complete for the model.
//!
//! Details that keep it sound:
//! - A request retried with its idempotency key is **one** operation from its
//!   first invocation to its last response. One never acknowledged (the
//!   client gave up) is *pending*: it may take effect at any point after its
//!   invocation, or never. Its value, if it took effect, is the MAC's value in
//!   the final state (any other value would contradict the final read anyway).
//! - The final state, read linearizably after every client stopped and the
//!   replicas converged, is a read of every MAC placed after every completed
//!   operation.
//! - Reads ask for a node *number* (`GetNode`). Found(mac) is a read of that
//!   MAC's register returning the number. NotFound(n) is a read returning
//!   "unset" of the MAC that holds `n` in the final state (under freshness at
//!   most one MAC ever holds `n`); if no MAC holds `n` at the end it
//!   constrains nothing here (a lost number shows up as a lost write or a
//!   Found read contradicting the final state).
//!
//! A stale read (a read that misses a write acknowledged before the read
//! began) is a linearizability violation of the MAC's register, so "no stale
//! reads" is part of (1).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// `DiscoverNode` of one MAC.
    Discover {
        /// The MAC.
        mac: String,
    },
    /// `GetNode` of a number.
    Read {
        /// The number.
        number: u32,
    },
}

/// What it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// Discover acknowledged with this number.
    Number(u32),
    /// Read: the node with this number has this (first) MAC.
    Found(String),
    /// Read: no node with this number.
    NotFound,
    /// No answer (gave up): may or may not have happened.
    Unknown,
}

/// One operation (all retries of one request).
#[derive(Debug, Clone)]
pub struct Op {
    /// Client index.
    pub client: usize,
    /// What was asked.
    pub kind: OpKind,
    /// First invocation, µs since the history began.
    pub invoke: u64,
    /// Response, µs since the history began (None = never answered).
    pub complete: Option<u64>,
    /// The answer.
    pub result: OpResult,
    /// Replica that answered (0 = none).
    pub served_by: u64,
    /// Invocation of the attempt that got the answer, µs.
    pub last_attempt: u64,
}

/// A concurrent history being recorded.
pub struct History {
    t0: Instant,
    ops: Mutex<Vec<Op>>,
}

impl History {
    /// An empty history starting now.
    pub fn new() -> Self {
        History {
            t0: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// µs since the history began.
    pub fn now(&self) -> u64 {
        self.at(Instant::now())
    }

    /// `t` in µs since the history began.
    pub fn at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.t0).as_micros() as u64
    }

    /// Record a finished (or abandoned) operation.
    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Everything recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    /// Acknowledged discoveries.
    pub acked: usize,
    /// Discoveries never acknowledged.
    pub unknown: usize,
    /// Reads answered.
    pub reads: usize,
    /// Acknowledged (mac, number) missing or different in the final state.
    pub lost: Vec<(String, u32, Option<u32>)>,
    /// Numbers held by more than one MAC.
    pub duplicates: Vec<(u32, Vec<String>)>,
    /// MACs whose sub-history is not linearizable, with their operations.
    pub not_linearizable: Vec<(String, Vec<String>)>,
}

impl Report {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.lost.is_empty() && self.duplicates.is_empty() && self.not_linearizable.is_empty()
    }

    /// A one-paragraph summary, with the first few problems.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} acked, {} unknown, {} reads; {} lost, {} duplicate numbers, {} non-linearizable MACs",
            self.acked,
            self.unknown,
            self.reads,
            self.lost.len(),
            self.duplicates.len(),
            self.not_linearizable.len()
        );
        for l in self.lost.iter().take(5) {
            s.push_str(&format!(
                "\n  lost: {} acked as {} but final {:?}",
                l.0, l.1, l.2
            ));
        }
        for d in self.duplicates.iter().take(5) {
            s.push_str(&format!("\n  duplicate: number {} held by {:?}", d.0, d.1));
        }
        for (mac, ops) in self.not_linearizable.iter().take(3) {
            s.push_str(&format!("\n  not linearizable: {mac}:"));
            for o in ops {
                s.push_str(&format!("\n    {o}"));
            }
        }
        s
    }
}

/// An operation on one register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegOp {
    /// Create returning this value (or `None`: unknown, value = final).
    Create(Option<u32>),
    /// Read returning this.
    Read(Option<u32>),
}

#[derive(Debug, Clone)]
struct KeyOp {
    invoke: u64,
    complete: Option<u64>,
    op: RegOp,
    text: String,
}

/// Check a history against the model, given the final state (MAC → number).
pub fn check(ops: &[Op], final_state: &BTreeMap<String, u32>) -> Report {
    let mut report = Report::default();
    let owner: HashMap<u32, &String> = final_state.iter().map(|(m, n)| (*n, m)).collect();
    let mut per_key: HashMap<String, Vec<KeyOp>> = HashMap::new();
    let mut end = 0u64;
    for op in ops {
        end = end.max(op.complete.unwrap_or(op.invoke)).max(op.invoke);
        let text = format!(
            "c{} {:?} [{}..{}] -> {:?} (replica {})",
            op.client,
            op.kind,
            op.invoke,
            op.complete.map_or("∞".to_string(), |c| c.to_string()),
            op.result,
            op.served_by
        );
        let (key, reg) = match (&op.kind, &op.result) {
            (OpKind::Discover { mac }, OpResult::Number(n)) => {
                report.acked += 1;
                if final_state.get(mac) != Some(n) {
                    report
                        .lost
                        .push((mac.clone(), *n, final_state.get(mac).copied()));
                }
                (mac.clone(), RegOp::Create(Some(*n)))
            }
            (OpKind::Discover { mac }, _) => {
                report.unknown += 1;
                (mac.clone(), RegOp::Create(None))
            }
            (OpKind::Read { number }, OpResult::Found(mac)) => {
                report.reads += 1;
                (mac.clone(), RegOp::Read(Some(*number)))
            }
            (OpKind::Read { number }, OpResult::NotFound) => {
                report.reads += 1;
                match owner.get(number) {
                    Some(mac) => ((*mac).clone(), RegOp::Read(None)),
                    None => continue,
                }
            }
            (OpKind::Read { .. }, _) => continue, // unanswered read: no constraint
        };
        let complete = match reg {
            RegOp::Create(None) => None,
            _ => op.complete,
        };
        per_key.entry(key).or_default().push(KeyOp {
            invoke: op.invoke,
            complete,
            op: reg,
            text,
        });
    }
    // The final read of every MAC.
    let keys: HashSet<String> = per_key
        .keys()
        .cloned()
        .chain(final_state.keys().cloned())
        .collect();
    for key in keys {
        let v = final_state.get(&key).copied();
        let list = per_key.entry(key.clone()).or_default();
        list.push(KeyOp {
            invoke: end + 1,
            complete: Some(end + 2),
            op: RegOp::Read(v),
            text: format!("final state -> {v:?}"),
        });
        if !linearizable(list, v) {
            report
                .not_linearizable
                .push((key, list.iter().map(|o| o.text.clone()).collect()));
        }
    }
    // Freshness: distinct MACs hold distinct numbers.
    let mut holders: BTreeMap<u32, HashSet<String>> = BTreeMap::new();
    for (mac, n) in final_state {
        holders.entry(*n).or_default().insert(mac.clone());
    }
    for op in ops {
        if let (OpKind::Discover { mac }, OpResult::Number(n)) = (&op.kind, &op.result) {
            holders.entry(*n).or_default().insert(mac.clone());
        }
    }
    for (n, macs) in holders {
        if macs.len() > 1 {
            let mut v: Vec<String> = macs.into_iter().collect();
            v.sort();
            report.duplicates.push((n, v));
        }
    }
    report.lost.sort();
    report.not_linearizable.sort();
    report
}

/// Wing–Gong/Lowe search for one register's sub-history. `final_value` is
/// the value an unknown-result create sets.
fn linearizable(ops: &[KeyOp], final_value: Option<u32>) -> bool {
    let n = ops.len();
    assert!(n <= 64, "a MAC has {n} operations; the checker handles 64");
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| ops[i].invoke);
    let required: u64 = (0..n)
        .filter(|&i| ops[i].complete.is_some())
        .fold(0, |m, i| m | (1 << i));
    let mut seen: HashSet<(u64, Option<u32>)> = HashSet::new();
    search(ops, &order, 0, None, required, final_value, &mut seen)
}

fn step(op: RegOp, state: Option<u32>, final_value: Option<u32>) -> Option<Option<u32>> {
    match op {
        RegOp::Create(Some(v)) => match state {
            None => Some(Some(v)),
            Some(w) if w == v => Some(Some(w)),
            Some(_) => None,
        },
        RegOp::Create(None) => match state {
            None => final_value.map(Some),
            Some(w) => Some(Some(w)),
        },
        RegOp::Read(r) => (r == state).then_some(state),
    }
}

fn search(
    ops: &[KeyOp],
    order: &[usize],
    done: u64,
    state: Option<u32>,
    required: u64,
    final_value: Option<u32>,
    seen: &mut HashSet<(u64, Option<u32>)>,
) -> bool {
    if done & required == required {
        return true;
    }
    if !seen.insert((done, state)) {
        return false;
    }
    // An op may go next if no other not-yet-linearized op completed before it
    // was invoked.
    let horizon = order
        .iter()
        .filter(|&&i| done & (1 << i) == 0)
        .filter_map(|&i| ops[i].complete)
        .min()
        .unwrap_or(u64::MAX);
    for &i in order {
        if done & (1 << i) != 0 {
            continue;
        }
        if ops[i].invoke > horizon {
            break;
        }
        if let Some(next) = step(ops[i].op, state, final_value)
            && search(
                ops,
                order,
                done | (1 << i),
                next,
                required,
                final_value,
                seen,
            )
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disc(client: usize, mac: &str, inv: u64, comp: Option<u64>, r: OpResult) -> Op {
        Op {
            client,
            kind: OpKind::Discover { mac: mac.into() },
            invoke: inv,
            complete: comp,
            result: r,
            served_by: 1,
            last_attempt: inv,
        }
    }

    fn read(number: u32, inv: u64, comp: u64, r: OpResult) -> Op {
        Op {
            client: 9,
            kind: OpKind::Read { number },
            invoke: inv,
            complete: Some(comp),
            result: r,
            served_by: 1,
            last_attempt: inv,
        }
    }

    fn fin(v: &[(&str, u32)]) -> BTreeMap<String, u32> {
        v.iter().map(|(m, n)| (m.to_string(), *n)).collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let ops = vec![
            disc(0, "a", 0, Some(10), OpResult::Number(1)),
            disc(1, "b", 5, Some(15), OpResult::Number(2)),
            read(1, 2, 8, OpResult::NotFound), // concurrent with the create
            read(1, 11, 12, OpResult::Found("a".into())),
            disc(2, "a", 20, Some(30), OpResult::Number(1)),
            disc(3, "c", 40, None, OpResult::Unknown),
        ];
        let r = check(&ops, &fin(&[("a", 1), ("b", 2), ("c", 3)]));
        assert!(r.ok(), "{}", r.summary());
        assert_eq!((r.acked, r.unknown, r.reads), (3, 1, 2));
    }

    #[test]
    fn a_lost_write_is_found() {
        let ops = vec![disc(0, "a", 0, Some(10), OpResult::Number(1))];
        let r = check(&ops, &fin(&[]));
        assert_eq!(r.lost.len(), 1);
        assert_eq!(r.not_linearizable.len(), 1);
    }

    #[test]
    fn a_stale_read_is_found() {
        let ops = vec![
            disc(0, "a", 0, Some(10), OpResult::Number(1)),
            read(1, 11, 12, OpResult::NotFound),
        ];
        let r = check(&ops, &fin(&[("a", 1)]));
        assert_eq!(r.not_linearizable.len(), 1, "{}", r.summary());
        assert!(r.lost.is_empty());
    }

    #[test]
    fn a_changed_number_and_a_duplicate_are_found() {
        let ops = vec![
            disc(0, "a", 0, Some(10), OpResult::Number(1)),
            disc(1, "a", 20, Some(30), OpResult::Number(2)),
            disc(2, "b", 20, Some(30), OpResult::Number(1)),
        ];
        let r = check(&ops, &fin(&[("a", 2), ("b", 1)]));
        assert!(!r.not_linearizable.is_empty());
        assert_eq!(r.duplicates.len(), 1, "{}", r.summary());
    }

    #[test]
    fn a_read_of_an_unacknowledged_write_is_fine_once_it_happened() {
        let ops = vec![
            disc(0, "a", 0, None, OpResult::Unknown),
            read(1, 5, 6, OpResult::Found("a".into())),
            read(1, 7, 8, OpResult::Found("a".into())),
        ];
        // Number 1 was never a's: not linearizable.
        assert_eq!(check(&ops, &fin(&[("a", 4)])).not_linearizable.len(), 1);
        let ops = vec![
            disc(0, "a", 0, None, OpResult::Unknown),
            read(4, 5, 6, OpResult::Found("a".into())),
            read(4, 7, 8, OpResult::Found("a".into())),
        ];
        let r = check(&ops, &fin(&[("a", 4)]));
        assert!(r.ok(), "{}", r.summary());
        // Seen, then unseen again: not linearizable.
        let ops = vec![
            disc(0, "a", 0, None, OpResult::Unknown),
            read(4, 5, 6, OpResult::Found("a".into())),
            read(4, 7, 8, OpResult::NotFound),
        ];
        assert_eq!(check(&ops, &fin(&[("a", 4)])).not_linearizable.len(), 1);
    }
}
