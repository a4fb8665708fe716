//! The hash chain: keys, the canonical form of a record, MACs, and the
//! verifier that names where a chain breaks.
//!
//! # The MAC of a record (format v1)
//!
//! ```text
//! mac(n) = lower-hex( HMAC-SHA-256( K_chain, mac(n-1) || canonical(n) ) )
//! mac(0) = lower-hex( HMAC-SHA-256( K_chain, "metamcp-audit-genesis-v1\0" || chain_id ) )
//! ```
//!
//! `mac(n-1)` enters as its 64 ASCII hex characters. `canonical(n)` is the
//! bytes `metamcp-audit-v1\0` followed by the record's fields in this fixed
//! order: chain_id, seq, id, ts, kind, tenant_id, actor_id, actor_name,
//! auth_method, action, target, server, tool, outcome, status, duration_us,
//! args_hash, args, detail, request_id; each field encoded as
//! `0x00` (NULL), `0x01 || u32 big-endian byte length || UTF-8 bytes` (text)
//! or `0x02 || i64 big-endian` (integer). Length prefixes make the encoding
//! unambiguous; seq and chain_id inside the MAC make a record impossible to
//! move within or between chains.
//!
//! The head of a chain is `(chain_id, seq, mac)` of its last record with
//! `head_mac = HMAC(K_chain, "metamcp-audit-head-v1\0" || chain_id-field ||
//! seq-field || mac-field)` (same field encoding), so a chain cut short
//! cannot be given a matching head without the key.
//!
//! # Keys
//!
//! All keys come from one secret by HKDF-SHA-256 (salt `metamcp audit v1`):
//! `META_MCP_AUDIT_KEY` when set, else `META_MCP_SECRET_KEY` (or the
//! generated `DATA_DIR/secret.key`). Info `chain` gives K_chain, `arguments`
//! the key of argument hashes, `cursor` the key of REST paging cursors.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::{AuditRow, ChainHead};

type HmacSha256 = Hmac<Sha256>;

const RECORD_TAG: &[u8] = b"metamcp-audit-v1\0";
const GENESIS_TAG: &[u8] = b"metamcp-audit-genesis-v1\0";
const HEAD_TAG: &[u8] = b"metamcp-audit-head-v1\0";

/// The keys of the audit trail. Never stored in the database.
#[derive(Clone)]
pub struct AuditKeys {
    chain: [u8; 32],
    arguments: [u8; 32],
    cursor: [u8; 32],
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKeys(***)")
    }
}

impl AuditKeys {
    /// Derives every audit key from one secret.
    pub fn derive(secret: &[u8]) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"metamcp audit v1"), secret);
        let expand = |info: &[u8]| {
            let mut key = [0u8; 32];
            hk.expand(info, &mut key)
                .expect("32 bytes is a valid HKDF-SHA-256 output length");
            key
        };
        Self {
            chain: expand(b"chain"),
            arguments: expand(b"arguments"),
            cursor: expand(b"cursor"),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.chain).expect("HMAC takes any key length");
        for p in parts {
            mac.update(p);
        }
        hex(&mac.finalize().into_bytes())
    }

    /// The MAC of `record` following a record whose MAC is `prev`.
    pub fn record_mac(&self, prev: &str, record: &AuditRow) -> String {
        self.mac(&[prev.as_bytes(), &canonical(record)])
    }

    /// The head of a chain without records.
    pub fn genesis(&self, chain_id: &str) -> ChainHead {
        let mac = self.mac(&[GENESIS_TAG, chain_id.as_bytes()]);
        self.head(chain_id, 0, mac)
    }

    /// A head with its MAC.
    pub fn head(&self, chain_id: &str, seq: i64, mac: String) -> ChainHead {
        let head_mac = self.head_mac(chain_id, seq, &mac);
        ChainHead {
            chain_id: chain_id.to_owned(),
            seq,
            mac,
            head_mac,
        }
    }

    fn head_mac(&self, chain_id: &str, seq: i64, mac: &str) -> String {
        let mut bytes = HEAD_TAG.to_vec();
        text(&mut bytes, Some(chain_id));
        int(&mut bytes, Some(seq));
        text(&mut bytes, Some(mac));
        self.mac(&[&bytes])
    }

    /// Whether a stored head carries the MAC only the key can compute.
    pub fn head_is_authentic(&self, head: &ChainHead) -> bool {
        constant_time_eq(
            &self.head_mac(&head.chain_id, head.seq, &head.mac),
            &head.head_mac,
        )
    }

    /// Numbers and MACs `drafts` onto the chain after `head`: returns the
    /// rows to store and the new head.
    pub fn seal(&self, head: &ChainHead, drafts: Vec<AuditRow>) -> (Vec<AuditRow>, ChainHead) {
        let mut seq = head.seq;
        let mut prev = head.mac.clone();
        let rows: Vec<AuditRow> = drafts
            .into_iter()
            .map(|mut r| {
                seq += 1;
                r.chain_id = head.chain_id.clone();
                r.seq = seq;
                r.mac = self.record_mac(&prev, &r);
                prev = r.mac.clone();
                r
            })
            .collect();
        (rows, self.head(&head.chain_id, seq, prev))
    }

    /// The keyed hash of a call's arguments (canonical JSON, keys sorted):
    /// equal arguments hash equal, but nobody without the key can test a
    /// guess against a stored hash.
    pub fn arguments_hash(&self, canonical_json: &str) -> String {
        let mut mac =
            HmacSha256::new_from_slice(&self.arguments).expect("HMAC takes any key length");
        mac.update(canonical_json.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// A MAC for paging cursors handed to REST clients.
    pub fn cursor_mac(&self, payload: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.cursor).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            // Stored values are far below 4 GiB (the body limit bounds them).
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
}

fn int(out: &mut Vec<u8>, value: Option<i64>) {
    match value {
        None => out.push(0),
        Some(n) => {
            out.push(2);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// The canonical bytes of a record (see the module documentation).
pub fn canonical(r: &AuditRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + r.args.as_ref().map_or(0, String::len));
    out.extend_from_slice(RECORD_TAG);
    text(&mut out, Some(&r.chain_id));
    int(&mut out, Some(r.seq));
    text(&mut out, Some(&r.id));
    text(&mut out, Some(&r.ts));
    text(&mut out, Some(&r.kind));
    text(&mut out, Some(&r.tenant_id));
    text(&mut out, r.actor_id.as_deref());
    text(&mut out, r.actor_name.as_deref());
    text(&mut out, r.auth_method.as_deref());
    text(&mut out, Some(&r.action));
    text(&mut out, r.target.as_deref());
    text(&mut out, r.server.as_deref());
    text(&mut out, r.tool.as_deref());
    text(&mut out, Some(&r.outcome));
    int(&mut out, r.status);
    int(&mut out, r.duration_us);
    text(&mut out, r.args_hash.as_deref());
    text(&mut out, r.args.as_deref());
    text(&mut out, r.detail.as_deref());
    text(&mut out, r.request_id.as_deref());
    out
}

/// Where and how a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Break {
    /// The record's MAC does not match its contents and its predecessor:
    /// it was changed, or inserted in place of the original.
    Changed { seq: i64, id: String },
    /// Records `from..=to` are not there (removed); `next` follows the gap.
    Missing {
        from: i64,
        to: i64,
        next_id: Option<String>,
    },
    /// A second record with a seq already seen: inserted.
    Duplicate { seq: i64, id: String },
    /// A record after the chain's head: inserted (or the head rolled back).
    BeyondHead { seq: i64, id: String },
    /// The chain has records but no head row (removed, or the records were
    /// inserted under a chain id no writer used).
    NoHead,
    /// The head row's own MAC does not verify: it was edited.
    ForgedHead { seq: i64 },
    /// A head (from the database or one given from the log) that the chain
    /// does not reach or does not match at that seq.
    HeadMismatch { seq: i64, detail: String },
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Break::Changed { seq, id } => write!(
                f,
                "record seq {seq} (id {id}) does not verify: changed, or inserted"
            ),
            Break::Missing { from, to, next_id } => {
                if from == to {
                    write!(f, "record seq {from} is missing (removed)")?;
                } else {
                    write!(f, "records seq {from} to {to} are missing (removed)")?;
                }
                match next_id {
                    Some(id) => write!(f, "; the chain resumes at id {id}"),
                    None => Ok(()),
                }
            }
            Break::Duplicate { seq, id } => {
                write!(f, "record seq {seq} (id {id}) repeats a seq: inserted")
            }
            Break::BeyondHead { seq, id } => {
                write!(
                    f,
                    "record seq {seq} (id {id}) lies beyond the chain's head: inserted"
                )
            }
            Break::NoHead => write!(f, "the chain has no head row (removed or forged chain)"),
            Break::ForgedHead { seq } => {
                write!(f, "the chain's head (seq {seq}) does not verify: edited")
            }
            Break::HeadMismatch { seq, detail } => write!(f, "head at seq {seq}: {detail}"),
        }
    }
}

/// What verification found in one chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    pub chain_id: String,
    pub records: u64,
    /// The last seq of the records read.
    pub last_seq: i64,
    pub head_seq: Option<i64>,
    pub breaks: Vec<Break>,
}

/// Most breaks reported per chain: enough to see the damage, bounded.
const MAX_BREAKS: usize = 100;

/// Checks one chain, record by record in (seq, id) order.
pub struct ChainVerifier<'k> {
    keys: &'k AuditKeys,
    report: ChainReport,
    prev: String,
    /// The chain's stored head.
    head: Option<ChainHead>,
    /// MACs of the records at the seqs a caller wants to check (logged
    /// heads), filled in as they pass.
    seen: Vec<(i64, String, Option<String>)>,
}

impl<'k> ChainVerifier<'k> {
    /// A verifier of chain `chain_id`, whose stored head is `head`.
    pub fn new(keys: &'k AuditKeys, chain_id: &str, head: Option<ChainHead>) -> Self {
        Self {
            keys,
            head,
            prev: keys.genesis(chain_id).mac,
            report: ChainReport {
                chain_id: chain_id.to_owned(),
                records: 0,
                last_seq: 0,
                head_seq: None,
                breaks: Vec::new(),
            },
            seen: Vec::new(),
        }
    }

    /// Also checks that the record at `seq` has MAC `mac` (a head written
    /// to the log earlier).
    pub fn expect(&mut self, seq: i64, mac: String) {
        self.seen.push((seq, mac, None));
    }

    fn broken(&mut self, b: Break) {
        if self.report.breaks.len() < MAX_BREAKS {
            self.report.breaks.push(b);
        }
    }

    /// Feeds the next record.
    pub fn feed(&mut self, row: &AuditRow) {
        self.report.records += 1;
        let expected = self.report.last_seq + 1;
        if row.seq < expected {
            self.broken(Break::Duplicate {
                seq: row.seq,
                id: row.id.clone(),
            });
            // The record before stays the reference for what follows.
            return;
        }
        if row.seq > expected {
            self.broken(Break::Missing {
                from: expected,
                to: row.seq - 1,
                next_id: Some(row.id.clone()),
            });
        } else if !constant_time_eq(&self.keys.record_mac(&self.prev, row), &row.mac) {
            self.broken(Break::Changed {
                seq: row.seq,
                id: row.id.clone(),
            });
        }
        // Records past an authentic head were not written by a writer (it
        // moves the head in the same transaction): the first is named.
        if let Some(head) = &self.head
            && row.seq == head.seq + 1
        {
            let b = Break::BeyondHead {
                seq: row.seq,
                id: row.id.clone(),
            };
            self.broken(b);
        }
        for (seq, _, found) in &mut self.seen {
            if *seq == row.seq {
                *found = Some(row.mac.clone());
            }
        }
        // Continue from the stored MAC, so one edit is reported once and
        // the records after it are still checked against each other.
        self.prev = row.mac.clone();
        self.report.last_seq = row.seq;
    }

    /// Ends the chain against its stored head.
    pub fn finish(mut self) -> ChainReport {
        let head = self.head.take();
        match &head {
            None if self.report.records > 0 => self.broken(Break::NoHead),
            None => {}
            Some(head) => {
                self.report.head_seq = Some(head.seq);
                if !self.keys.head_is_authentic(head) {
                    self.broken(Break::ForgedHead { seq: head.seq });
                } else if head.seq > self.report.last_seq {
                    self.broken(Break::Missing {
                        from: self.report.last_seq + 1,
                        to: head.seq,
                        next_id: None,
                    });
                } else if head.seq == self.report.last_seq
                    && !constant_time_eq(&head.mac, &self.prev)
                {
                    self.broken(Break::HeadMismatch {
                        seq: head.seq,
                        detail: "the last record's MAC is not the head's".into(),
                    });
                }
            }
        }
        for (seq, mac, found) in std::mem::take(&mut self.seen) {
            match found {
                None => self.broken(Break::HeadMismatch {
                    seq,
                    detail: "no record at this seq: the chain was cut short".into(),
                }),
                Some(f) if !constant_time_eq(&f, &mac) => self.broken(Break::HeadMismatch {
                    seq,
                    detail: "the record at this seq has another MAC than the one logged".into(),
                }),
                Some(_) => {}
            }
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> AuditKeys {
        AuditKeys::derive(b"a test secret of at least thirty-two bytes")
    }

    fn draft(n: usize) -> AuditRow {
        AuditRow {
            id: format!("id-{n:04}"),
            ts: format!("2026-11-24T08:00:{:02}.000000Z", n % 60),
            kind: "tool_call".into(),
            tenant_id: "default".into(),
            actor_id: Some("u1".into()),
            action: "tools/call".into(),
            tool: Some("fx__echo".into()),
            server: Some("fx".into()),
            outcome: "success".into(),
            status: None,
            duration_us: Some(1234),
            ..Default::default()
        }
    }

    /// A sealed chain of `n` records and its head.
    fn chain(keys: &AuditKeys, n: usize) -> (Vec<AuditRow>, ChainHead) {
        let genesis = keys.genesis("main");
        // Two batches, as the writer would seal them.
        let (mut rows, head) = keys.seal(&genesis, (1..=n / 2).map(draft).collect());
        let (more, head) = keys.seal(&head, (n / 2 + 1..=n).map(draft).collect());
        rows.extend(more);
        (rows, head)
    }

    fn verify(keys: &AuditKeys, rows: &[AuditRow], head: Option<&ChainHead>) -> ChainReport {
        let mut v = ChainVerifier::new(keys, "main", head.cloned());
        let mut sorted = rows.to_vec();
        sorted.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
        for r in &sorted {
            v.feed(r);
        }
        v.finish()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let k = keys();
        let (rows, head) = chain(&k, 10);
        assert_eq!(
            rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        let report = verify(&k, &rows, Some(&head));
        assert_eq!(report.breaks, []);
        assert_eq!(
            (report.records, report.last_seq, report.head_seq),
            (10, 10, Some(10))
        );
        // An empty chain with its genesis head is whole too.
        assert_eq!(verify(&k, &[], Some(&k.genesis("main"))).breaks, []);
    }

    #[test]
    fn a_changed_record_is_named() {
        let k = keys();
        let (mut rows, head) = chain(&k, 10);
        rows[4].outcome = "denied".into();
        let report = verify(&k, &rows, Some(&head));
        assert_eq!(
            report.breaks,
            [Break::Changed {
                seq: 5,
                id: "id-0005".into()
            }]
        );
        // Every field is covered: a NULL made a value breaks it too.
        let (mut rows, head) = chain(&k, 4);
        rows[1].status = Some(200);
        assert_eq!(
            verify(&k, &rows, Some(&head)).breaks,
            [Break::Changed {
                seq: 2,
                id: "id-0002".into()
            }]
        );
        // So does moving a record to another place in the chain.
        let (mut rows, head) = chain(&k, 4);
        rows.swap(1, 2);
        let (s1, s2) = (rows[1].seq, rows[2].seq);
        rows[1].seq = s2;
        rows[2].seq = s1;
        assert!(!verify(&k, &rows, Some(&head)).breaks.is_empty());
    }

    #[test]
    fn a_removed_record_is_named() {
        let k = keys();
        let (mut rows, head) = chain(&k, 10);
        rows.remove(6);
        let report = verify(&k, &rows, Some(&head));
        assert_eq!(
            report.breaks,
            [Break::Missing {
                from: 7,
                to: 7,
                next_id: Some("id-0008".into())
            }]
        );
        // The last records removed: the head says the chain was longer.
        let (mut rows, head) = chain(&k, 10);
        rows.truncate(8);
        let report = verify(&k, &rows, Some(&head));
        assert_eq!(
            report.breaks,
            [Break::Missing {
                from: 9,
                to: 10,
                next_id: None
            }]
        );
        // ... and a head moved back to match cannot be made without the key.
        let forged = ChainHead {
            seq: 8,
            mac: rows[7].mac.clone(),
            ..head.clone()
        };
        assert_eq!(
            verify(&k, &rows, Some(&forged)).breaks,
            [Break::ForgedHead { seq: 8 }]
        );
    }

    #[test]
    fn an_inserted_record_is_named() {
        let k = keys();
        let (rows, head) = chain(&k, 6);
        // Beside an existing seq.
        let mut extra = draft(99);
        extra.seq = 3;
        extra.chain_id = "main".into();
        extra.id = "id-0003x".into();
        extra.mac = rows[2].mac.clone();
        let mut with = rows.clone();
        with.push(extra.clone());
        assert_eq!(
            verify(&k, &with, Some(&head)).breaks,
            [Break::Duplicate {
                seq: 3,
                id: "id-0003x".into()
            }]
        );
        // At the end, with a made-up MAC.
        extra.seq = 7;
        extra.mac = "00".repeat(32);
        let mut with = rows.clone();
        with.push(extra);
        let report = verify(&k, &with, Some(&head));
        assert!(report.breaks.contains(&Break::Changed {
            seq: 7,
            id: "id-0003x".into()
        }));
        assert!(report.breaks.contains(&Break::BeyondHead {
            seq: 7,
            id: "id-0003x".into()
        }));
        // A whole chain no writer made has no head.
        assert_eq!(verify(&k, &rows, None).breaks, [Break::NoHead]);
    }

    #[test]
    fn another_key_verifies_nothing() {
        let (rows, head) = chain(&keys(), 3);
        let other = AuditKeys::derive(b"another secret of at least thirty-two bytes");
        let report = verify(&other, &rows, Some(&head));
        assert_eq!(report.breaks.len(), 4, "{:?}", report.breaks);
    }

    #[test]
    fn logged_heads_catch_a_chain_cut_short_with_its_head() {
        let k = keys();
        let (rows, head) = chain(&k, 6);
        // Even a (hypothetically) authentic head for seq 4 does not hide it.
        let cut = k.head("main", 4, rows[3].mac.clone());
        let mut v = ChainVerifier::new(&k, "main", Some(cut));
        v.expect(head.seq, head.mac.clone());
        for r in &rows[..4] {
            v.feed(r);
        }
        let report = v.finish();
        assert!(
            matches!(
                report.breaks.as_slice(),
                [Break::HeadMismatch { seq: 6, .. }]
            ),
            "{:?}",
            report.breaks
        );
    }

    #[test]
    fn the_canonical_form_is_unambiguous() {
        let mut a = draft(1);
        let mut b = draft(1);
        a.actor_name = Some("ab".into());
        a.auth_method = Some("c".into());
        b.actor_name = Some("a".into());
        b.auth_method = Some("bc".into());
        assert_ne!(canonical(&a), canonical(&b));
        a.actor_name = None;
        b.actor_name = Some(String::new());
        assert_ne!(canonical(&a), canonical(&b));
    }

    #[test]
    fn argument_hashes_are_keyed() {
        let k = keys();
        let h = k.arguments_hash(r#"{"a":1}"#);
        assert_eq!(h, k.arguments_hash(r#"{"a":1}"#));
        assert_ne!(h, k.arguments_hash(r#"{"a":2}"#));
        assert_ne!(
            h,
            AuditKeys::derive(b"another secret of at least thirty-two bytes")
                .arguments_hash(r#"{"a":1}"#)
        );
    }
}
