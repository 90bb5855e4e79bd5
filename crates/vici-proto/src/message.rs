//! The message format (VICI README, "Message format"): a sequence of
//! elements, each an 8-bit type, a name (8-bit length, ASCII) for sections,
//! key/values and lists, and a value (16-bit big-endian length, raw bytes)
//! for key/values and list items.

use std::fmt;

use zeroize::Zeroize;

use crate::{Error, Result};

/// Element types, as numbered in the README.
pub mod element {
    pub const SECTION_START: u8 = 1;
    pub const SECTION_END: u8 = 2;
    pub const KEY_VALUE: u8 = 3;
    pub const LIST_START: u8 = 4;
    pub const LIST_ITEM: u8 = 5;
    pub const LIST_END: u8 = 6;
}

/// How deep sections may nest in a message we decode. The README sets no
/// limit; charon's own messages nest four or five levels. A bound keeps a
/// hostile peer from making us recurse (in `Drop`, `Debug`) without end.
pub const MAX_DEPTH: usize = 32;

/// Values of keys with these names are never shown by `Debug`.
const SECRET_KEYS: &[&str] = &["data", "secret"];

/// What a name in a section stands for.
#[derive(Clone, PartialEq, Eq)]
pub enum Element {
    /// A key/value pair's value (charon sends strings, numbers as strings).
    Value(Vec<u8>),
    /// A list of unnamed items.
    List(Vec<Vec<u8>>),
    /// A sub-section.
    Section(Message),
}

/// A section: named elements in the order they were added or received.
/// Values are wiped when the message is dropped.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Message {
    items: Vec<(String, Element)>,
}

impl Drop for Message {
    fn drop(&mut self) {
        for (_, e) in &mut self.items {
            match e {
                Element::Value(v) => v.zeroize(),
                Element::List(l) => l.iter_mut().for_each(Zeroize::zeroize),
                Element::Section(_) => {}
            }
        }
    }
}

impl Message {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name = value`.
    pub fn with_value(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.items.push((name.into(), Element::Value(value.as_ref().to_vec())));
        self
    }

    /// Adds `name = [items]`.
    pub fn with_list<I, V>(mut self, name: impl Into<String>, items: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        self.items.push((name.into(), Element::List(items.into_iter().map(|v| v.as_ref().to_vec()).collect())));
        self
    }

    /// Adds `name = { section }`.
    pub fn with_section(mut self, name: impl Into<String>, section: Message) -> Self {
        self.items.push((name.into(), Element::Section(section)));
        self
    }

    /// The elements in order.
    pub fn items(&self) -> impl Iterator<Item = (&str, &Element)> {
        self.items.iter().map(|(n, e)| (n.as_str(), e))
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The first element called `name`.
    pub fn get(&self, name: &str) -> Option<&Element> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }

    /// The value of key `name` as UTF-8 text.
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Element::Value(v) => std::str::from_utf8(v).ok(),
            _ => None,
        }
    }

    /// The value of key `name` as a decimal number.
    pub fn u64(&self, name: &str) -> Option<u64> {
        self.str(name)?.trim().parse().ok()
    }

    /// The sub-section `name`.
    pub fn section(&self, name: &str) -> Option<&Message> {
        match self.get(name)? {
            Element::Section(s) => Some(s),
            _ => None,
        }
    }

    /// The items of list `name` as text (items that are not UTF-8 are left out).
    pub fn list(&self, name: &str) -> Vec<&str> {
        match self.get(name) {
            Some(Element::List(l)) => l.iter().filter_map(|v| std::str::from_utf8(v).ok()).collect(),
            _ => Vec::new(),
        }
    }

    /// The sub-sections, in order, with their names.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Message)> {
        self.items.iter().filter_map(|(n, e)| match e {
            Element::Section(s) => Some((n.as_str(), s)),
            _ => None,
        })
    }

    /// Appends the encoded elements to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        for (name, e) in &self.items {
            match e {
                Element::Value(v) => {
                    out.push(element::KEY_VALUE);
                    write_name(name, out)?;
                    write_value(v, out)?;
                }
                Element::List(items) => {
                    out.push(element::LIST_START);
                    write_name(name, out)?;
                    for v in items {
                        out.push(element::LIST_ITEM);
                        write_value(v, out)?;
                    }
                    out.push(element::LIST_END);
                }
                Element::Section(s) => {
                    out.push(element::SECTION_START);
                    write_name(name, out)?;
                    s.encode(out)?;
                    out.push(element::SECTION_END);
                }
            }
        }
        Ok(())
    }

    /// A message from its whole encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_from(&mut Reader::new(bytes))
    }

    /// Reads elements to the end of the reader (the message's length is the
    /// wrapping layer's), without recursion.
    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        // Open sections: their names and contents; the root is at the bottom.
        let mut stack: Vec<(String, Message)> = vec![(String::new(), Message::new())];
        let mut list: Option<(String, Vec<Vec<u8>>)> = None;
        while !r.is_empty() {
            let ty = r.u8("element type")?;
            if list.is_some() && !matches!(ty, element::LIST_ITEM | element::LIST_END) {
                return Err(Error::Malformed("only list items may appear inside a list"));
            }
            match ty {
                element::SECTION_START => {
                    if stack.len() > MAX_DEPTH {
                        return Err(Error::Malformed("sections nested too deep"));
                    }
                    let name = r.name("section name")?;
                    stack.push((name, Message::new()));
                }
                element::SECTION_END => {
                    if stack.len() < 2 {
                        return Err(Error::Malformed("section end without a section"));
                    }
                    let Some((name, done)) = stack.pop() else { return Err(Error::Malformed("no open section")) };
                    top(&mut stack)?.items.push((name, Element::Section(done)));
                }
                element::KEY_VALUE => {
                    let name = r.name("key name")?;
                    let value = r.blob("value")?;
                    top(&mut stack)?.items.push((name, Element::Value(value)));
                }
                element::LIST_START => {
                    let name = r.name("list name")?;
                    list = Some((name, Vec::new()));
                }
                element::LIST_ITEM => {
                    let Some((_, items)) = list.as_mut() else {
                        return Err(Error::Malformed("list item outside a list"));
                    };
                    items.push(r.blob("list item")?);
                }
                element::LIST_END => {
                    let Some((name, items)) = list.take() else {
                        return Err(Error::Malformed("list end without a list"));
                    };
                    top(&mut stack)?.items.push((name, Element::List(items)));
                }
                other => return Err(Error::UnknownElement(other)),
            }
        }
        if list.is_some() {
            return Err(Error::Malformed("a list is not closed"));
        }
        if stack.len() != 1 {
            return Err(Error::Malformed("a section is not closed"));
        }
        stack.pop().map(|(_, m)| m).ok_or(Error::Malformed("no root section"))
    }
}

fn top(stack: &mut [(String, Message)]) -> Result<&mut Message> {
    stack.last_mut().map(|(_, m)| m).ok_or(Error::Malformed("no open section"))
}

/// `{ key = value, list = [a, b], sub { ... } }`, with secret values hidden.
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, e)) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, " {name}")?;
            match e {
                Element::Value(v) if SECRET_KEYS.contains(&name.as_str()) => write!(f, " = <{} bytes>", v.len())?,
                Element::Value(v) => write!(f, " = {:?}", String::from_utf8_lossy(v))?,
                Element::List(l) => {
                    let items: Vec<_> = l.iter().map(|v| String::from_utf8_lossy(v)).collect();
                    write!(f, " = {items:?}")?;
                }
                Element::Section(s) => write!(f, " {s:?}")?,
            }
        }
        f.write_str(" }")
    }
}

impl fmt::Debug for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Value(v) => write!(f, "<{} bytes>", v.len()),
            Element::List(l) => write!(f, "<list of {}>", l.len()),
            Element::Section(s) => s.fmt(f),
        }
    }
}

pub(crate) fn write_name(name: &str, out: &mut Vec<u8>) -> Result<()> {
    if !name.is_ascii() {
        return Err(Error::NameNotAscii);
    }
    let len = u8::try_from(name.len()).map_err(|_| Error::NameTooLong(name.len()))?;
    out.push(len);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn write_value(v: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let len = u16::try_from(v.len()).map_err(|_| Error::ValueTooLong(v.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(v);
    Ok(())
}

/// A bounds-checked reader: every short read is an error, never a panic.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(Error::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8> {
        self.take(1, what)?.first().copied().ok_or(Error::Truncated(what))
    }

    pub(crate) fn name(&mut self, what: &'static str) -> Result<String> {
        let len = usize::from(self.u8(what)?);
        let bytes = self.take(len, what)?;
        if !bytes.is_ascii() {
            return Err(Error::NameNotAscii);
        }
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn blob(&mut self, what: &'static str) -> Result<Vec<u8>> {
        let head = self.take(2, what)?;
        let mut len = [0u8; 2];
        len.copy_from_slice(head);
        Ok(self.take(usize::from(u16::from_be_bytes(len)), what)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The README's encoding example, byte for byte.
    #[test]
    fn readme_example() {
        let expect: &[u8] = &[
            3, 4, b'k', b'e', b'y', b'1', 0, 6, b'v', b'a', b'l', b'u', b'e', b'1', //
            1, 8, b's', b'e', b'c', b't', b'i', b'o', b'n', b'1', //
            1, 11, b's', b'u', b'b', b'-', b's', b'e', b'c', b't', b'i', b'o', b'n', //
            3, 4, b'k', b'e', b'y', b'2', 0, 6, b'v', b'a', b'l', b'u', b'e', b'2', //
            2,    //
            4, 5, b'l', b'i', b's', b't', b'1', //
            5, 0, 5, b'i', b't', b'e', b'm', b'1', //
            5, 0, 5, b'i', b't', b'e', b'm', b'2', //
            6, 2,
        ];
        let m = Message::new().with_value("key1", "value1").with_section(
            "section1",
            Message::new()
                .with_section("sub-section", Message::new().with_value("key2", "value2"))
                .with_list("list1", ["item1", "item2"]),
        );
        let mut out = Vec::new();
        m.encode(&mut out).unwrap();
        assert_eq!(out, expect);
        let back = Message::decode(expect).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.section("section1").unwrap().list("list1"), ["item1", "item2"]);
        assert_eq!(back.section("section1").unwrap().section("sub-section").unwrap().str("key2"), Some("value2"));
    }

    #[test]
    fn malformed_messages() {
        let cases: &[(&[u8], Error)] = &[
            (&[2], Error::Malformed("section end without a section")),
            (&[1, 1, b's'], Error::Malformed("a section is not closed")),
            (&[4, 1, b'l'], Error::Malformed("a list is not closed")),
            (&[5, 0, 0], Error::Malformed("list item outside a list")),
            (&[6], Error::Malformed("list end without a list")),
            (&[4, 1, b'l', 3, 1, b'k', 0, 0, 6], Error::Malformed("only list items may appear inside a list")),
            (&[4, 1, b'l', 4, 1, b'm', 6, 6], Error::Malformed("only list items may appear inside a list")),
            (&[3, 1, b'k', 0, 5, b'a'], Error::Truncated("value")),
            (&[3, 9, b'k'], Error::Truncated("key name")),
            (&[9], Error::UnknownElement(9)),
        ];
        for (bytes, err) in cases {
            assert_eq!(Message::decode(bytes).as_ref(), Err(err), "{bytes:?}");
        }
        let deep: Vec<u8> = std::iter::repeat_n([1u8, 1, b's'], MAX_DEPTH + 1).flatten().collect();
        assert_eq!(Message::decode(&deep), Err(Error::Malformed("sections nested too deep")));
    }

    #[test]
    fn encode_limits() {
        let mut out = Vec::new();
        let long = "k".repeat(256);
        assert_eq!(Message::new().with_value(&long, "v").encode(&mut out), Err(Error::NameTooLong(256)));
        assert_eq!(Message::new().with_value("k", vec![0; 65536]).encode(&mut out), Err(Error::ValueTooLong(65536)));
        assert_eq!(Message::new().with_value("ké", "v").encode(&mut out), Err(Error::NameNotAscii));
    }

    #[test]
    fn debug_hides_secret_values() {
        let m = Message::new().with_value("id", "rsiscsi-1").with_value("data", "hunter2hunter2");
        let shown = format!("{m:?}");
        assert!(shown.contains("rsiscsi-1") && !shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<14 bytes>"));
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z_-]{1,12}"
    }

    fn message(depth: u32) -> BoxedStrategy<Message> {
        let leaf = prop_oneof![
            (name(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(n, v)| (n, Element::Value(v))),
            (name(), proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..10), 0..4))
                .prop_map(|(n, l)| (n, Element::List(l))),
        ];
        let item = if depth == 0 {
            leaf.boxed()
        } else {
            prop_oneof![leaf, (name(), message(depth - 1)).prop_map(|(n, m)| (n, Element::Section(m)))].boxed()
        };
        proptest::collection::vec(item, 0..5).prop_map(|items| Message { items }).boxed()
    }

    proptest! {
        #[test]
        fn round_trip(m in message(3)) {
            let mut out = Vec::new();
            m.encode(&mut out).unwrap();
            prop_assert_eq!(Message::decode(&out).unwrap(), m);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Message::decode(&bytes);
            let _ = crate::Packet::decode(&bytes);
        }
    }
}
