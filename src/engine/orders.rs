//! The per-order state machine and the book of our orders.
//!
//! All transitions live in one table, [`transition`]. Both the REST side (placement,
//! cancel and query responses) and the stream side (executionReport) drive it, in
//! whatever order they arrive: terminal states absorb everything, a stale `NEW` after
//! a fill is ignored, and duplicates change nothing. Fill quantities are not counted
//! here but by trade id in the engine, so a fill delivered twice (stream + REST, or a
//! duplicated frame) is counted once whatever the order state says.

// foldhash, not std's SipHash: every open_of_symbol, get and insert hashes a client
// id, several times per quote decision; SipHash was ~20 % of a requoting handle
// (benches/engine_handle.rs). The keys are our own client ids and symbols (and the
// exchange's ids of our account's orders), and the seed is still random per map.
use foldhash::{HashMap, HashSet};
use std::collections::hash_map::Entry;

use rust_decimal::Decimal;

use crate::binance::types::{OrderStatus, Side};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// Sent, no answer yet.
    PendingNew,
    New,
    PartiallyFilled,
    Filled,
    /// We asked to cancel, no answer yet (or the answer was inconclusive: query pending).
    PendingCancel,
    Canceled,
    Rejected,
    Expired,
    /// Placement timed out or failed with 5xx: the order may or may not exist. Resolved
    /// by querying by client order id, never by placing again.
    Unknown,
}

impl OrderState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderState::Filled | OrderState::Canceled | OrderState::Rejected | OrderState::Expired
        )
    }

    /// May be resting on the book (so counts against quotes and must be cancelled at stop).
    pub fn may_be_open(self) -> bool {
        !self.is_terminal()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::PendingNew => "PENDING_NEW",
            OrderState::New => "NEW",
            OrderState::PartiallyFilled => "PARTIALLY_FILLED",
            OrderState::Filled => "FILLED",
            OrderState::PendingCancel => "PENDING_CANCEL",
            OrderState::Canceled => "CANCELED",
            OrderState::Rejected => "REJECTED",
            OrderState::Expired => "EXPIRED",
            OrderState::Unknown => "UNKNOWN",
        }
    }
}

/// What happened to an order, from either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The exchange says the order rests (NEW).
    Accepted,
    PartiallyFilled,
    Filled,
    Canceled,
    Rejected,
    Expired,
    /// We sent a cancel request.
    CancelSent,
    /// Placement outcome unknown (timeout, 5xx, transport error after sending).
    PlaceOutcomeUnknown,
    /// A cancel came back -2011 or without a conclusive answer: a query decides.
    CancelInconclusive,
    /// A query by client order id says the exchange never saw this order.
    NotFound,
}

impl Trigger {
    pub fn from_status(s: OrderStatus) -> Option<Trigger> {
        Some(match s {
            OrderStatus::New | OrderStatus::PendingNew => Trigger::Accepted,
            OrderStatus::PartiallyFilled => Trigger::PartiallyFilled,
            OrderStatus::Filled => Trigger::Filled,
            OrderStatus::Canceled => Trigger::Canceled,
            OrderStatus::Rejected => Trigger::Rejected,
            OrderStatus::Expired | OrderStatus::ExpiredInMatch => Trigger::Expired,
            // The exchange is still deciding; nothing to learn.
            OrderStatus::PendingCancel | OrderStatus::Unknown => return None,
        })
    }

    /// Whether this trigger reports the exchange's view (as opposed to our own actions).
    pub fn is_exchange_status(self) -> bool {
        !matches!(
            self,
            Trigger::CancelSent | Trigger::PlaceOutcomeUnknown | Trigger::CancelInconclusive
        )
    }
}

/// The transition table. `None` means "ignore": a duplicate, a stale event arriving after
/// a later one, or anything after a terminal state.
pub fn transition(from: OrderState, trigger: Trigger) -> Option<OrderState> {
    use OrderState as S;
    use Trigger as T;
    let to = match (from, trigger) {
        // Terminal states absorb everything: the exchange never revives an order.
        (S::Filled | S::Canceled | S::Rejected | S::Expired, _) => return None,

        (S::PendingNew, T::Accepted) => S::New,
        (S::PendingNew, T::PartiallyFilled) => S::PartiallyFilled,
        (S::PendingNew, T::Filled) => S::Filled,
        (S::PendingNew, T::Canceled) => S::Canceled,
        (S::PendingNew, T::Rejected) => S::Rejected,
        (S::PendingNew, T::Expired) => S::Expired,
        (S::PendingNew, T::CancelSent) => S::PendingCancel,
        (S::PendingNew, T::PlaceOutcomeUnknown) => S::Unknown,
        (S::PendingNew, T::CancelInconclusive) => return None,
        (S::PendingNew, T::NotFound) => S::Rejected,

        (S::Unknown, T::Accepted) => S::New,
        (S::Unknown, T::PartiallyFilled) => S::PartiallyFilled,
        (S::Unknown, T::Filled) => S::Filled,
        (S::Unknown, T::Canceled) => S::Canceled,
        (S::Unknown, T::Rejected) => S::Rejected,
        (S::Unknown, T::Expired) => S::Expired,
        // Cancel by client order id works whether or not the order exists.
        (S::Unknown, T::CancelSent) => S::PendingCancel,
        (S::Unknown, T::PlaceOutcomeUnknown | T::CancelInconclusive) => return None,
        (S::Unknown, T::NotFound) => S::Rejected,

        (S::New, T::Accepted) => return None,
        (S::New, T::PartiallyFilled) => S::PartiallyFilled,
        (S::New, T::Filled) => S::Filled,
        (S::New, T::Canceled) => S::Canceled,
        (S::New, T::Rejected) => S::Rejected,
        (S::New, T::Expired) => S::Expired,
        (S::New, T::CancelSent) => S::PendingCancel,
        (S::New, T::PlaceOutcomeUnknown | T::CancelInconclusive) => return None,
        // The exchange acknowledged it but now, asked twice, does not know it (it
        // restarted and forgot its book): it cannot rest there. Left New, the market
        // would never be quoted again. Its fills, if any, come by trade id anyway.
        (S::New, T::NotFound) => S::Expired,

        // A NEW after a partial fill is stale.
        (S::PartiallyFilled, T::Accepted | T::PartiallyFilled) => return None,
        (S::PartiallyFilled, T::Filled) => S::Filled,
        (S::PartiallyFilled, T::Canceled) => S::Canceled,
        (S::PartiallyFilled, T::Rejected) => return None,
        (S::PartiallyFilled, T::Expired) => S::Expired,
        (S::PartiallyFilled, T::CancelSent) => S::PendingCancel,
        (S::PartiallyFilled, T::PlaceOutcomeUnknown | T::CancelInconclusive) => return None,
        (S::PartiallyFilled, T::NotFound) => S::Expired,

        // While a cancel is in flight, fills may still happen; only a final status ends it.
        (S::PendingCancel, T::Accepted | T::PartiallyFilled) => return None,
        (S::PendingCancel, T::Filled) => S::Filled,
        (S::PendingCancel, T::Canceled) => S::Canceled,
        (S::PendingCancel, T::Rejected) => S::Rejected,
        (S::PendingCancel, T::Expired) => S::Expired,
        (S::PendingCancel, T::CancelSent | T::PlaceOutcomeUnknown | T::CancelInconclusive) => {
            return None;
        }
        (S::PendingCancel, T::NotFound) => S::Rejected,
    };
    Some(to)
}

/// One of our orders.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub client_id: String,
    pub symbol: String,
    pub side: Side,
    pub price: Decimal,
    pub qty: Decimal,
    pub level: u32,
    /// Daemon-local handle given to the strategy/diff.
    pub handle: u64,
    pub order_id: Option<u64>,
    pub state: OrderState,
    /// Cumulative filled quantity (the largest `z` / executedQty seen).
    pub cum_qty: Decimal,
    pub placed_ms: u64,
    /// The REST side (placement/cancel/query response, or a resync) reported a final state.
    pub final_by_rest: bool,
    /// The user stream reported a final state.
    pub final_by_stream: bool,
    /// When the order became terminal (for the linger before it is forgotten).
    pub terminal_since_ms: Option<u64>,
    /// A query by client order id is in flight.
    pub query_in_flight: bool,
    /// A cancel request is in flight.
    pub cancel_in_flight: bool,
    /// A query is due (Unknown placement, inconclusive cancel, missing from openOrders).
    pub query_due: bool,
    /// Earliest time the next query may be sent (queries are paced, never in a tight loop).
    pub next_query_ms: u64,
    pub not_found_count: u32,
    /// executionReport ids already applied (duplicate frames are dropped early).
    seen_exec_ids: Vec<u64>,
}

/// Which side a report came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Rest,
    Stream,
}

/// What an update changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub from: OrderState,
    pub to: OrderState,
}

impl Applied {
    pub fn changed(&self) -> bool {
        self.from != self.to
    }
}

impl Order {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client_id: String,
        symbol: String,
        side: Side,
        price: Decimal,
        qty: Decimal,
        level: u32,
        handle: u64,
        now_ms: u64,
    ) -> Self {
        Order {
            client_id,
            symbol,
            side,
            price,
            qty,
            level,
            handle,
            order_id: None,
            state: OrderState::PendingNew,
            cum_qty: Decimal::ZERO,
            placed_ms: now_ms,
            final_by_rest: false,
            final_by_stream: false,
            terminal_since_ms: None,
            query_in_flight: false,
            cancel_in_flight: false,
            query_due: false,
            next_query_ms: 0,
            not_found_count: 0,
            seen_exec_ids: Vec::new(),
        }
    }

    pub fn remaining(&self) -> Decimal {
        (self.qty - self.cum_qty).max(Decimal::ZERO)
    }

    /// Applies a trigger through the table; records which side reported a final state and
    /// the cumulative quantity. Returns what changed.
    pub fn apply(
        &mut self,
        trigger: Trigger,
        source: Source,
        cum_qty: Option<Decimal>,
        now_ms: u64,
    ) -> Applied {
        let from = self.state;
        if let Some(z) = cum_qty
            && z > self.cum_qty
        {
            self.cum_qty = z;
        }
        if let Some(to) = transition(from, trigger) {
            self.state = to;
        }
        if self.state.is_terminal() && trigger.is_exchange_status() {
            // Only a report of the exchange's own final status counts as that side agreeing.
            let reported_final = matches!(
                trigger,
                Trigger::Filled
                    | Trigger::Canceled
                    | Trigger::Rejected
                    | Trigger::Expired
                    | Trigger::NotFound
            );
            if reported_final {
                match source {
                    Source::Rest => self.final_by_rest = true,
                    Source::Stream => self.final_by_stream = true,
                }
            }
        }
        if self.state.is_terminal() && self.terminal_since_ms.is_none() {
            self.terminal_since_ms = Some(now_ms);
        }
        Applied {
            from,
            to: self.state,
        }
    }

    /// Records an execution id; false if it was seen already (a duplicate frame).
    pub fn first_sight_of_exec(&mut self, exec_id: u64) -> bool {
        if self.seen_exec_ids.contains(&exec_id) {
            return false;
        }
        self.seen_exec_ids.push(exec_id);
        true
    }

    /// Forgotten once both sides agree it is finished, or (when one side will never say so,
    /// e.g. the stream was down and a resync settled it) after `linger_ms` in a final state.
    pub fn can_forget(&self, now_ms: u64, linger_ms: u64) -> bool {
        match self.terminal_since_ms {
            None => false,
            Some(since) => {
                (self.final_by_rest && self.final_by_stream)
                    || now_ms.saturating_sub(since) >= linger_ms
            }
        }
    }
}

/// All our orders, by client order id.
#[derive(Debug, Default)]
pub struct OrderBook {
    /// The orders, each in a slot that stays its own until it is forgotten; `None` is a
    /// free slot (listed in `free`). The per-symbol index refers to slots, so walking it
    /// hashes nothing: [`Self::open_of_symbol`] runs several times per quote decision
    /// and every insert prunes its symbol's list, and looking each client id up by hash
    /// was the largest part of `OrderBook::insert` (~22 % of a replacing `handle`).
    slots: Vec<Option<Order>>,
    free: Vec<usize>,
    /// Client order id to slot.
    index: HashMap<String, usize>,
    by_exchange_id: HashMap<(String, u64), String>,
    /// Slots per symbol, in insertion order, of orders that may be open (finished ones
    /// are pruned on the next insert or `forget_finished`; a finished order never
    /// reopens). Scanning every order (finished ones linger 30 s) with a symbol
    /// comparison each was the top CPU cost at 100 markets. A slot is taken out of its
    /// symbol's list before it is freed, so a listed slot always holds an order of that
    /// symbol.
    by_symbol: HashMap<String, Vec<usize>>,
    /// Symbols whose orders may have changed (inserted, or handed out mutably) since
    /// [`Self::take_touched`]: the engine republishes their open-order gauges only.
    touched: HashSet<String>,
    /// Every symbol may have changed (`iter_mut`).
    touched_all: bool,
}

fn touch(touched: &mut HashSet<String>, touched_all: bool, symbol: &str) {
    if !touched_all && !touched.contains(symbol) {
        touched.insert(symbol.to_owned());
    }
}

impl OrderBook {
    pub fn insert(&mut self, order: Order) {
        if let Some(id) = order.order_id {
            self.by_exchange_id
                .insert((order.symbol.clone(), id), order.client_id.clone());
        }
        touch(&mut self.touched, self.touched_all, &order.symbol);
        // One hash of the client id for both the lookup and the insert.
        let slot = match self.index.entry(order.client_id.clone()) {
            Entry::Occupied(e) => {
                let slot = *e.get();
                if let Some(old) = self.slots[slot].replace(order) {
                    touch(&mut self.touched, self.touched_all, &old.symbol);
                    self.unindex(&old.symbol, slot);
                }
                slot
            }
            Entry::Vacant(e) => {
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.slots[slot] = Some(order);
                        slot
                    }
                    None => {
                        self.slots.push(Some(order));
                        self.slots.len() - 1
                    }
                };
                e.insert(slot);
                slot
            }
        };
        let Some(symbol) = self.slots[slot].as_ref().map(|o| o.symbol.as_str()) else {
            return;
        };
        // The symbol String is cloned only for a symbol's first order.
        let ids = match self.by_symbol.get_mut(symbol) {
            Some(ids) => ids,
            None => self.by_symbol.entry(symbol.to_owned()).or_default(),
        };
        let slots = &self.slots;
        ids.retain(|&s| is_open(slots, s));
        ids.push(slot);
    }

    /// The symbols whose orders may have changed since the last call (None: any may
    /// have), and forgets them.
    pub fn take_touched(&mut self) -> Option<HashSet<String>> {
        if std::mem::take(&mut self.touched_all) {
            self.touched.clear();
            return None;
        }
        Some(std::mem::take(&mut self.touched))
    }

    fn unindex(&mut self, symbol: &str, slot: usize) {
        if let Some(ids) = self.by_symbol.get_mut(symbol) {
            ids.retain(|&s| s != slot);
            if ids.is_empty() {
                self.by_symbol.remove(symbol);
            }
        }
    }

    fn slot_of(&self, client_id: &str) -> Option<usize> {
        self.index.get(client_id).copied()
    }

    pub fn get(&self, client_id: &str) -> Option<&Order> {
        self.slots.get(self.slot_of(client_id)?)?.as_ref()
    }

    pub fn get_mut(&mut self, client_id: &str) -> Option<&mut Order> {
        let slot = self.slot_of(client_id)?;
        let o = self.slots.get_mut(slot)?.as_mut()?;
        touch(&mut self.touched, self.touched_all, &o.symbol);
        Some(o)
    }

    /// Records the exchange's order id (first answer from either side).
    pub fn set_exchange_id(&mut self, client_id: &str, order_id: u64) {
        let Some(slot) = self.slot_of(client_id) else {
            return;
        };
        if let Some(Some(o)) = self.slots.get_mut(slot)
            && o.order_id.is_none()
        {
            o.order_id = Some(order_id);
            self.by_exchange_id
                .insert((o.symbol.clone(), order_id), client_id.to_owned());
        }
    }

    pub fn client_id_of(&self, symbol: &str, order_id: u64) -> Option<&str> {
        self.by_exchange_id
            .get(&(symbol.to_owned(), order_id))
            .map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Order> {
        self.slots.iter().flatten()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Order> {
        self.touched_all = true;
        self.slots.iter_mut().flatten()
    }

    /// The orders of `symbol` that may be open (not in a final state), oldest first.
    pub fn open_of_symbol<'a>(&'a self, symbol: &'a str) -> impl Iterator<Item = &'a Order> + 'a {
        self.by_symbol
            .get(symbol)
            .into_iter()
            .flatten()
            .filter_map(|&s| self.slots.get(s)?.as_ref())
            .filter(|o| o.state.may_be_open())
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Drops orders both sides agree are finished (or that lingered long enough).
    pub fn forget_finished(&mut self, now_ms: u64, linger_ms: u64) -> Vec<Order> {
        let gone: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, o)| o.as_ref().is_some_and(|o| o.can_forget(now_ms, linger_ms)))
            .map(|(s, _)| s)
            .collect();
        let mut out = Vec::with_capacity(gone.len());
        for slot in gone {
            if let Some(o) = self.slots[slot].take() {
                self.index.remove(o.client_id.as_str());
                if let Some(oid) = o.order_id {
                    self.by_exchange_id.remove(&(o.symbol.clone(), oid));
                }
                self.unindex(&o.symbol, slot);
                self.free.push(slot);
                out.push(o);
            }
        }
        let slots = &self.slots;
        self.by_symbol.retain(|_, ids| {
            ids.retain(|&s| is_open(slots, s));
            !ids.is_empty()
        });
        out
    }
}

fn is_open(slots: &[Option<Order>], slot: usize) -> bool {
    slots
        .get(slot)
        .and_then(Option::as_ref)
        .is_some_and(|o| o.state.may_be_open())
}

/// Client order ids: `<prefix>-<symbol>-<run>-<seq>`, e.g. `mmd-BTCUSDT-k3x9q-42`.
/// The run id is random per process start, so ids never repeat across restarts; the
/// prefix tells our orders from anyone else's on the same account. ≤ 36 characters of
/// Binance's charset `[A-Za-z0-9_-]`, checked at construction.
#[derive(Debug, Clone)]
pub struct ClientIdGen {
    prefix: String,
    run: String,
    seq: u64,
}

pub const MAX_CLIENT_ID_LEN: usize = 36;

impl ClientIdGen {
    pub fn new(prefix: &str, run: &str) -> Self {
        ClientIdGen {
            prefix: prefix.to_owned(),
            run: run.to_owned(),
            seq: 0,
        }
    }

    /// A fresh run id: 6 base-36 characters.
    pub fn random_run_id() -> String {
        use rand::RngExt;
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut rng = rand::rng();
        (0..6)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    }

    pub fn next(&mut self, symbol: &str) -> String {
        self.seq += 1;
        // Written straight into one buffer: a `format!` with a base-36 String and a
        // filtered symbol String in between was ~8 % of a replacing `handle`.
        let mut digits = [0u8; BASE36_MAX];
        let seq = base36_into(self.seq, &mut digits);
        // The symbol part shrinks if it must; prefix, run and sequence keep the id unique.
        let fixed = self.prefix.len() + self.run.len() + seq.len() + 3;
        let room = MAX_CLIENT_ID_LEN.saturating_sub(fixed);
        let mut id = String::with_capacity(fixed + room.min(symbol.len()));
        id.push_str(&self.prefix);
        id.push('-');
        // Bytes, not chars: every byte of a non-ASCII char is >= 0x80, so the ASCII
        // alphanumerics are the same either way.
        symbol
            .bytes()
            .filter(u8::is_ascii_alphanumeric)
            .take(room)
            .for_each(|b| id.push(char::from(b)));
        id.push('-');
        id.push_str(&self.run);
        id.push('-');
        id.push_str(seq);
        debug_assert!(is_valid_client_id(&id), "{id}");
        id
    }

    /// Whether a client order id was made by a daemon with this prefix (any run).
    pub fn is_ours(prefix: &str, client_id: &str) -> bool {
        client_id
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('-'))
    }
}

/// Base-36 digits of a u64: 36^13 > 2^64.
const BASE36_MAX: usize = 13;

/// `n` in base 36 (lowercase), written at the end of `buf`.
fn base36_into(mut n: u64, buf: &mut [u8; BASE36_MAX]) -> &str {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut at = BASE36_MAX;
    loop {
        at -= 1;
        buf[at] = DIGITS[(n % 36) as usize];
        n /= 36;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or_default()
}

pub fn is_valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderState as S;
    use Trigger as T;

    const ALL_STATES: [OrderState; 9] = [
        S::PendingNew,
        S::New,
        S::PartiallyFilled,
        S::Filled,
        S::PendingCancel,
        S::Canceled,
        S::Rejected,
        S::Expired,
        S::Unknown,
    ];
    const ALL_TRIGGERS: [Trigger; 10] = [
        T::Accepted,
        T::PartiallyFilled,
        T::Filled,
        T::Canceled,
        T::Rejected,
        T::Expired,
        T::CancelSent,
        T::PlaceOutcomeUnknown,
        T::CancelInconclusive,
        T::NotFound,
    ];

    #[test]
    fn terminal_states_absorb_everything() {
        for s in ALL_STATES.iter().filter(|s| s.is_terminal()) {
            for t in ALL_TRIGGERS {
                assert_eq!(transition(*s, t), None, "{s:?} + {t:?}");
            }
        }
    }

    #[test]
    fn every_exchange_final_status_is_reachable_from_every_live_state() {
        for s in ALL_STATES.iter().filter(|s| !s.is_terminal()) {
            assert_eq!(transition(*s, T::Filled), Some(S::Filled), "{s:?}");
            assert_eq!(transition(*s, T::Canceled), Some(S::Canceled), "{s:?}");
            assert_eq!(transition(*s, T::Expired), Some(S::Expired), "{s:?}");
        }
    }

    #[test]
    fn no_transition_ever_goes_back_to_pending_new_or_unknown_from_a_known_state() {
        for s in ALL_STATES {
            for t in ALL_TRIGGERS {
                if let Some(to) = transition(s, t) {
                    assert_ne!(to, S::PendingNew);
                    if to == S::Unknown {
                        assert_eq!(s, S::PendingNew, "{s:?} + {t:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_happy_path() {
        let mut o = order();
        o.apply(T::Accepted, Source::Rest, Some(Decimal::ZERO), 1);
        assert_eq!(o.state, S::New);
        o.apply(
            T::PartiallyFilled,
            Source::Stream,
            Some(Decimal::new(4, 1)),
            2,
        );
        assert_eq!(o.state, S::PartiallyFilled);
        o.apply(T::Filled, Source::Stream, Some(Decimal::ONE), 3);
        assert_eq!(o.state, S::Filled);
        assert!(o.final_by_stream && !o.final_by_rest);
        assert!(!o.can_forget(4, 60_000), "REST has not confirmed yet");
        assert!(o.can_forget(3 + 60_000, 60_000), "lingered long enough");
        o.apply(T::Filled, Source::Rest, Some(Decimal::ONE), 5);
        assert!(o.can_forget(5, 60_000));
    }

    #[test]
    fn timeout_then_query_resolves_without_replacing() {
        let mut o = order();
        o.apply(T::PlaceOutcomeUnknown, Source::Rest, None, 1);
        assert_eq!(o.state, S::Unknown);
        o.apply(T::Accepted, Source::Rest, Some(Decimal::ZERO), 2);
        assert_eq!(o.state, S::New);
        let mut o = order();
        o.apply(T::PlaceOutcomeUnknown, Source::Rest, None, 1);
        o.apply(T::NotFound, Source::Rest, None, 2);
        assert_eq!(o.state, S::Rejected);
        assert!(o.final_by_rest);
    }

    #[test]
    fn an_acknowledged_order_the_exchange_forgot_is_no_longer_open() {
        for cum in [None, Some(Decimal::new(4, 1))] {
            let mut o = order();
            o.apply(T::Accepted, Source::Stream, Some(Decimal::ZERO), 1);
            if cum.is_some() {
                o.apply(T::PartiallyFilled, Source::Stream, cum, 2);
            }
            o.apply(T::NotFound, Source::Rest, None, 3);
            assert_eq!(o.state, S::Expired);
            assert!(!o.state.may_be_open());
        }
    }

    #[test]
    fn cancel_unknown_order_waits_for_the_query() {
        let mut o = order();
        o.apply(T::Accepted, Source::Stream, None, 1);
        o.apply(T::CancelSent, Source::Rest, None, 2);
        o.apply(T::CancelInconclusive, Source::Rest, None, 3);
        assert_eq!(o.state, S::PendingCancel, "-2011 proves nothing by itself");
        o.apply(T::Filled, Source::Rest, Some(Decimal::ONE), 4);
        assert_eq!(o.state, S::Filled, "the query found it filled");
    }

    #[test]
    fn an_order_the_exchange_forgot_is_gone() {
        let mut o = order();
        o.apply(T::Accepted, Source::Rest, None, 1);
        o.apply(T::NotFound, Source::Rest, None, 2);
        assert_eq!(o.state, S::Expired);
        assert!(o.final_by_rest);
    }

    #[test]
    fn out_of_order_cancel_before_new() {
        let mut o = order();
        o.apply(T::Canceled, Source::Stream, None, 1);
        o.apply(T::Accepted, Source::Stream, None, 2);
        assert_eq!(o.state, S::Canceled);
    }

    #[test]
    fn client_ids_fit_binance_rules_and_are_recognisable() {
        let mut g = ClientIdGen::new("mmdprefx", &ClientIdGen::random_run_id());
        let a = g.next("BTCUSDT");
        let b = g.next("BTCUSDT");
        assert_ne!(a, b);
        for _ in 0..1000 {
            g.next("X");
        }
        g.seq = u64::MAX - 1;
        let long = g.next("VERYLONGSYMBOLNAME20");
        assert!(is_valid_client_id(&long), "{long} ({} chars)", long.len());
        assert!(ClientIdGen::is_ours("mmdprefx", &a));
        assert!(a.contains("BTCUSDT"), "{a}");
        assert!(!ClientIdGen::is_ours("mmd", "mmdx-BTC-1"));
        assert!(!ClientIdGen::is_ours("mmd", "web_123"));
        assert_ne!(ClientIdGen::random_run_id(), ClientIdGen::random_run_id());
    }

    #[test]
    fn client_ids_are_the_text_format_used_to_make() {
        // The id as `next` wrote it with `format!` before it was built in one buffer:
        // the wire format must not move.
        fn reference(prefix: &str, run: &str, seq: u64, symbol: &str) -> String {
            let mut digits = Vec::new();
            let mut n = seq;
            loop {
                digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
                n /= 36;
                if n == 0 {
                    break;
                }
            }
            digits.reverse();
            let seq = String::from_utf8(digits).unwrap();
            let room = MAX_CLIENT_ID_LEN.saturating_sub(prefix.len() + run.len() + seq.len() + 3);
            let sym: String = symbol
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(room)
                .collect();
            format!("{prefix}-{sym}-{run}-{seq}")
        }
        for (prefix, run) in [
            ("mmd", "k3x9q0"),
            ("mmdprefx", "abc"),
            ("a_very_long_prefix", "zz"),
        ] {
            for symbol in [
                "BTCUSDT",
                "X",
                "",
                "VERYLONGSYMBOLNAME20",
                "BTC-USDT_é€1",
                "ÄÖÜ",
            ] {
                for seq in [0, 1, 35, 36, 1295, 1296, 123_456_789, u64::MAX - 1] {
                    let mut g = ClientIdGen::new(prefix, run);
                    g.seq = seq;
                    assert_eq!(g.next(symbol), reference(prefix, run, seq + 1, symbol));
                }
            }
        }
    }

    #[test]
    fn a_freed_slot_serves_another_symbol_without_mixing_them_up() {
        let mk = |cid: &str, sym: &str| {
            Order::new(
                cid.into(),
                sym.into(),
                Side::Buy,
                Decimal::ONE,
                Decimal::ONE,
                0,
                1,
                0,
            )
        };
        let open = |b: &OrderBook, sym: &str| -> Vec<String> {
            b.open_of_symbol(sym).map(|o| o.client_id.clone()).collect()
        };
        let mut b = OrderBook::default();
        b.insert(mk("a1", "AAA"));
        b.insert(mk("a2", "AAA"));
        b.set_exchange_id("a1", 7);
        for (src, t) in [(Source::Rest, T::Canceled), (Source::Stream, T::Canceled)] {
            b.get_mut("a1").unwrap().apply(t, src, None, 1);
        }
        assert_eq!(open(&b, "AAA"), ["a2"]);
        let gone = b.forget_finished(2, 60_000);
        assert_eq!(gone.len(), 1);
        assert_eq!(
            (b.len(), b.get("a1"), b.client_id_of("AAA", 7)),
            (1, None, None)
        );
        // The new order takes a1's slot.
        b.insert(mk("b1", "BBB"));
        assert_eq!(open(&b, "AAA"), ["a2"]);
        assert_eq!(open(&b, "BBB"), ["b1"]);
        // The same client id again (adopted) under another symbol moves it.
        b.insert(mk("a2", "BBB"));
        assert_eq!(open(&b, "AAA"), Vec::<String>::new());
        assert_eq!(open(&b, "BBB"), ["b1", "a2"]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.iter().count(), 2);
        let mut touched: Vec<String> = b.take_touched().unwrap().into_iter().collect();
        touched.sort();
        assert_eq!(touched, ["AAA", "BBB"]);
    }

    fn order() -> Order {
        Order::new(
            "mmd-BTCUSDT-abc-1".into(),
            "BTCUSDT".into(),
            Side::Buy,
            Decimal::new(100, 0),
            Decimal::ONE,
            0,
            1,
            0,
        )
    }

    mod properties {
        use super::*;
        use crate::engine::reconcile::TradeDedup;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        struct Ev {
            trigger: Trigger,
            source: Source,
            z: Decimal,
            exec_id: Option<u64>,
            trade: Option<(i64, Decimal)>,
        }

        /// A valid life of one order: NEW, some trades, then FILLED or CANCELED, as the
        /// stream reports it, plus the REST placement answer and possibly our cancel.
        fn life() -> impl Strategy<Value = (Vec<Ev>, OrderState, Decimal, Decimal)> {
            (
                prop::collection::vec(1u32..50, 0..5),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(parts, fully, with_cancel)| {
                    let qty_total: u32 = parts.iter().sum::<u32>() + if fully { 0 } else { 7 };
                    let mut evs = vec![
                        Ev {
                            trigger: Trigger::Accepted,
                            source: Source::Rest,
                            z: Decimal::ZERO,
                            exec_id: None,
                            trade: None,
                        },
                        Ev {
                            trigger: Trigger::Accepted,
                            source: Source::Stream,
                            z: Decimal::ZERO,
                            exec_id: Some(1),
                            trade: None,
                        },
                    ];
                    let mut z = 0u32;
                    for (i, p) in parts.iter().enumerate() {
                        z += p;
                        let last = i + 1 == parts.len();
                        evs.push(Ev {
                            trigger: if last && fully {
                                Trigger::Filled
                            } else {
                                Trigger::PartiallyFilled
                            },
                            source: Source::Stream,
                            z: Decimal::from(z),
                            exec_id: Some(10 + i as u64),
                            trade: Some((1000 + i as i64, Decimal::from(*p))),
                        });
                    }
                    let end = if fully && !parts.is_empty() {
                        OrderState::Filled
                    } else {
                        evs.push(Ev {
                            trigger: Trigger::Canceled,
                            source: Source::Stream,
                            z: Decimal::from(z),
                            exec_id: Some(99),
                            trade: None,
                        });
                        if with_cancel {
                            evs.push(Ev {
                                trigger: Trigger::Canceled,
                                source: Source::Rest,
                                z: Decimal::from(z),
                                exec_id: None,
                                trade: None,
                            });
                        }
                        OrderState::Canceled
                    };
                    let _ = qty_total;
                    (evs, end, Decimal::from(z), Decimal::from(z))
                })
        }

        fn shuffled_with_duplicates()
        -> impl Strategy<Value = (Vec<Ev>, OrderState, Decimal, Decimal)> {
            life().prop_flat_map(|(evs, end, cum, traded)| {
                let n = evs.len();
                (
                    prop::collection::vec(0..n, 0..n + 3),
                    Just(evs),
                    Just(end),
                    Just(cum),
                    Just(traded),
                )
                    .prop_flat_map(|(dups, evs, end, cum, traded)| {
                        let mut all = evs.clone();
                        all.extend(dups.iter().map(|&i| evs[i].clone()));
                        (Just(all).prop_shuffle(), Just(end), Just(cum), Just(traded))
                    })
            })
        }

        proptest! {
            #[test]
            fn any_order_of_delivery_ends_the_same_and_counts_each_trade_once(
                (evs, end, cum, traded) in shuffled_with_duplicates(),
                cancel_at in 0usize..8,
            ) {
                let mut o = order();
                let mut dedup = TradeDedup::default();
                let mut counted = Decimal::ZERO;
                for (i, e) in evs.iter().enumerate() {
                    if i == cancel_at {
                        o.apply(Trigger::CancelSent, Source::Rest, None, i as u64);
                    }
                    if let Some(x) = e.exec_id && !o.first_sight_of_exec(x) {
                        continue;
                    }
                    if let Some((t, q)) = e.trade && dedup.first_sight(&o.symbol, t) {
                        counted += q;
                    }
                    o.apply(e.trigger, e.source, Some(e.z), i as u64);
                }
                prop_assert_eq!(o.state, end);
                prop_assert_eq!(o.cum_qty, cum);
                prop_assert_eq!(counted, traded);
                prop_assert!(o.final_by_stream);
            }
        }
    }
}
