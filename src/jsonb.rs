//! The claims of a verified token as a `jsonb` datum, written in jsonb's binary form here
//! rather than through `jsonb_in`. Profiling verify_jwt (README, "Where the time goes")
//! found most of its time in jsonb_in: Postgres' JSON lexer appends each character of
//! each string to a buffer, and the keys of every object are sorted with qsort through a
//! comparison callback. The payload has already been read as JSON (serde_json, before its
//! signature was checked); here it is read again with serde_json, keeping each number's
//! text, and the datum is written the way Postgres' `convertToJsonb` writes it, byte for
//! byte (a `#[pg_test]` compares the two on awkward inputs): numbers go through Postgres'
//! own `numeric_in`, as jsonb_in does, so every numeric is Postgres' own.
//!
//! Used only in a UTF-8 database (jsonb_in converts escapes to the database encoding) and
//! only for text serde_json accepts; anything else (and a `\u0000`, which jsonb refuses) is
//! handed to jsonb_in, so that errors and results stay exactly Postgres'.

use pgrx::prelude::*;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

// jsonb.h (PostgreSQL 15): container header flags and JEntry fields.
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_FARRAY: u32 = 0x4000_0000;
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOLFALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOLTRUE: u32 = 0x3000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;
const JB_OFFSET_STRIDE: usize = 32;

/// Why the fast path stepped aside (jsonb_in then decides).
#[derive(Debug)]
pub struct NotHere;

impl From<serde_json::Error> for NotHere {
    fn from(_: serde_json::Error) -> Self {
        NotHere
    }
}

/// One JSON value, numbers as their text.
enum Node<'a> {
    Null,
    Bool(bool),
    Number(&'a str),
    String(String),
    Array(Vec<Node<'a>>),
    Object(Vec<(String, Node<'a>)>),
}

/// An object's members in document order, each value still raw.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Members<'de>, M::Error> {
                let mut out = Vec::new();
                while let Some(entry) = m.next_entry::<String, &'de RawValue>()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn node(raw: &RawValue) -> Result<Node<'_>, NotHere> {
    let text = raw.get();
    Ok(match text.as_bytes().first() {
        Some(b'{') => Node::Object(
            serde_json::from_str::<Members>(text)?
                .0
                .into_iter()
                .map(|(k, v)| Ok((k, node(v)?)))
                .collect::<Result<_, NotHere>>()?,
        ),
        Some(b'[') => Node::Array(
            serde_json::from_str::<Vec<&RawValue>>(text)?
                .into_iter()
                .map(node)
                .collect::<Result<_, NotHere>>()?,
        ),
        Some(b'"') => Node::String(serde_json::from_str::<String>(text)?),
        Some(b't') => Node::Bool(true),
        Some(b'f') => Node::Bool(false),
        Some(b'n') => Node::Null,
        Some(b'-' | b'0'..=b'9') => Node::Number(text),
        _ => return Err(NotHere),
    })
}

/// The datum's bytes, varlena header first (filled in at the end).
struct Writer(Vec<u8>);

impl Writer {
    /// padBufferToInt: zeros up to a 4-byte boundary of the datum; how many.
    fn pad(&mut self) -> u32 {
        let pad = (4 - self.0.len() % 4) % 4;
        self.0.resize(self.0.len() + pad, 0);
        pad as u32
    }

    fn u32_at(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    /// convertJsonbValue: append the value's data, return its JEntry.
    fn value(&mut self, n: &Node) -> Result<u32, NotHere> {
        Ok(match n {
            Node::Null => JENTRY_ISNULL,
            Node::Bool(true) => JENTRY_ISBOOLTRUE,
            Node::Bool(false) => JENTRY_ISBOOLFALSE,
            Node::String(s) => self.string(s)?,
            Node::Number(t) => {
                let numeric = numeric(t)?;
                let pad = self.pad();
                self.0.extend_from_slice(&numeric);
                JENTRY_ISNUMERIC | (pad + numeric.len() as u32)
            }
            Node::Array(items) => {
                let items: Vec<&Node> = items.iter().collect();
                self.container(JB_FARRAY | items.len() as u32, &[], &items)?
            }
            Node::Object(members) => {
                // uniqueifyJsonbObject: keys by length, then bytes; of equal keys the
                // last one written wins.
                let mut order: Vec<(usize, &(String, Node))> = members.iter().enumerate().collect();
                order.sort_by(|(ia, (a, _)), (ib, (b, _))| {
                    (a.len(), a.as_bytes())
                        .cmp(&(b.len(), b.as_bytes()))
                        .then(ib.cmp(ia))
                });
                order.dedup_by(|(_, (later, _)), (_, (kept, _))| later == kept);
                let keys: Vec<&str> = order.iter().map(|(_, (k, _))| k.as_str()).collect();
                let values: Vec<&Node> = order.iter().map(|(_, (_, v))| v).collect();
                self.container(JB_FOBJECT | keys.len() as u32, &keys, &values)?
            }
        })
    }

    fn string(&mut self, s: &str) -> Result<u32, NotHere> {
        // jsonb refuses \u0000; let jsonb_in say so.
        if s.len() > JENTRY_OFFLENMASK as usize || s.contains('\0') {
            return Err(NotHere);
        }
        self.0.extend_from_slice(s.as_bytes());
        Ok(JENTRY_ISSTRING | s.len() as u32)
    }

    /// convertJsonbObject / convertJsonbArray: header, JEntries (keys first), then data;
    /// every JB_OFFSET_STRIDE'th JEntry holds the end offset instead of the length.
    fn container(&mut self, header: u32, keys: &[&str], values: &[&Node]) -> Result<u32, NotHere> {
        let base = self.0.len();
        self.pad();
        self.0.extend_from_slice(&header.to_ne_bytes());
        let mut slot = self.0.len();
        self.0.resize(slot + 4 * (keys.len() + values.len()), 0);
        let mut total: u32 = 0;
        let mut i = 0;
        let mut put = |w: &mut Writer, meta: u32| -> Result<(), NotHere> {
            total = total.checked_add(meta & JENTRY_OFFLENMASK).ok_or(NotHere)?;
            if total > JENTRY_OFFLENMASK {
                return Err(NotHere);
            }
            let meta = if i % JB_OFFSET_STRIDE == 0 {
                (meta & JENTRY_TYPEMASK) | total | JENTRY_HAS_OFF
            } else {
                meta
            };
            w.u32_at(slot, meta);
            slot += 4;
            i += 1;
            Ok(())
        };
        for k in keys {
            let meta = self.string(k)?;
            put(self, meta)?;
        }
        for v in values {
            let meta = self.value(v)?;
            put(self, meta)?;
        }
        let len = u32::try_from(self.0.len() - base).map_err(|_| NotHere)?;
        if len > JENTRY_OFFLENMASK {
            return Err(NotHere);
        }
        Ok(JENTRY_ISCONTAINER | len)
    }
}

/// Postgres' numeric of a JSON number's text, as jsonb_in makes it (numeric_in).
fn numeric(text: &str) -> Result<Vec<u8>, NotHere> {
    let c = std::ffi::CString::new(text).map_err(|_| NotHere)?;
    // SAFETY: numeric_in takes a cstring, a type oid and a typmod; it raises on text it
    // cannot read (jsonb_in would raise the same). The result is a palloc'd varlena with
    // a 4-byte header, copied out and freed.
    unsafe {
        let d = pgrx::direct_function_call_as_datum(
            pg_sys::numeric_in,
            &[
                Some(c.as_ptr().into()),
                Some(pg_sys::InvalidOid.into()),
                Some((-1i32).into()),
            ],
        )
        .ok_or(NotHere)?;
        let p = d.cast_mut_ptr::<pg_sys::varlena>();
        let len = pgrx::varlena::varsize_any(p);
        let bytes = std::slice::from_raw_parts(p as *const u8, len).to_vec();
        pg_sys::pfree(p.cast());
        Ok(bytes)
    }
}

/// The jsonb datum's bytes (with its 4-byte varlena header) of a JSON object's text.
pub fn object_bytes(json: &str) -> Result<Vec<u8>, NotHere> {
    let raw: &RawValue = serde_json::from_str(json)?;
    let root @ Node::Object(_) = node(raw)? else {
        return Err(NotHere);
    };
    let mut w = Writer(vec![0; 4]);
    w.value(&root)?;
    let len = u32::try_from(w.0.len()).map_err(|_| NotHere)?;
    // MaxAllocSize (1 GB - 1); a token is at most 64 kB, this only keeps the header sound.
    if len > 0x3FFF_FFFF {
        return Err(NotHere);
    }
    // SET_VARSIZE_4B: the length shifted left two bits (little-endian layout).
    #[cfg(target_endian = "little")]
    w.u32_at(0, len << 2);
    #[cfg(target_endian = "big")]
    w.u32_at(0, len & 0x3FFF_FFFF);
    Ok(w.0)
}

/// A JSON object's text as a jsonb datum, allocated in the current memory context.
pub fn from_object_text(json: &str) -> Option<pg_sys::Datum> {
    // SAFETY: reads the database encoding, fixed for the life of the backend.
    if unsafe { pg_sys::GetDatabaseEncoding() } != pg_sys::pg_enc::PG_UTF8 as i32 {
        return None;
    }
    let bytes = object_bytes(json).ok()?;
    // SAFETY: palloc'd in the current context and filled completely.
    unsafe {
        let p = pg_sys::palloc(bytes.len()) as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        Some(pg_sys::Datum::from(p))
    }
}

/// `jsonb_in`'s bytes of the same text, for the tests that compare the two.
#[cfg(any(test, feature = "pg_test"))]
pub fn jsonb_in_bytes(json: &str) -> Vec<u8> {
    let c = std::ffi::CString::new(json).unwrap();
    unsafe {
        let d = pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(c.as_ptr().into())])
            .unwrap();
        let p = d.cast_mut_ptr::<pg_sys::varlena>();
        std::slice::from_raw_parts(p as *const u8, pgrx::varlena::varsize_any(p)).to_vec()
    }
}
