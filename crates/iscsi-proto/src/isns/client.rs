//! The exchanges an iSCSI initiator has with an iSNS server, built and read
//! without I/O: register its Storage Node (DevAttrReg), ask which targets
//! its discovery domains show it (DevAttrQry, DevGetNext), register for
//! State Change Notifications (SCNReg) and answer them, deregister
//! (DevDereg). The caller picks transaction IDs and moves the bytes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::attr::{self, Attribute, NODE_TYPE_INITIATOR, NODE_TYPE_TARGET, Tag};
use super::pdu::{Flags, FunctionId};
use super::{Error, Message, Status};

/// The SCN bitmap (RFC 4171 §6.4.4); bit 31 of the RFC's numbering is 0x01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ScnBitmap(pub u32);

impl ScnBitmap {
    pub const DD_MEMBER_ADDED: Self = Self(0x01);
    pub const DD_MEMBER_REMOVED: Self = Self(0x02);
    pub const OBJECT_UPDATED: Self = Self(0x04);
    pub const OBJECT_ADDED: Self = Self(0x08);
    pub const OBJECT_REMOVED: Self = Self(0x10);
    pub const MANAGEMENT: Self = Self(0x20);
    pub const TARGET_AND_SELF_ONLY: Self = Self(0x40);
    pub const INITIATOR_AND_SELF_ONLY: Self = Self(0x80);

    /// What an initiator wants to hear: targets that appear, change or go.
    /// Management bits are for Control Nodes only (§6.4.4).
    pub const INITIATOR_DEFAULT: Self = Self(0x04 | 0x08 | 0x10 | 0x40);

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The node became visible: it was added, or joined one of our domains.
    pub fn is_added(self) -> bool {
        self.0 & (Self::OBJECT_ADDED.0 | Self::DD_MEMBER_ADDED.0) != 0
    }

    /// The node is no longer visible: removed, or left one of our domains.
    pub fn is_removed(self) -> bool {
        self.0 & (Self::OBJECT_REMOVED.0 | Self::DD_MEMBER_REMOVED.0) != 0
    }
}

/// What the initiator registers: one Network Entity holding one iSCSI
/// Storage Node of type initiator and, when SCNs are wanted, one Portal
/// whose SCN Port the server connects to (RFC 4171 §5.6.5.1, §6.3.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiatorNode {
    pub name: String,
    /// Entity Identifier (§6.2.1); unique per host, e.g. `rsiscsi:<name>`.
    pub entity: String,
    pub alias: Option<String>,
    /// Address and TCP port where SCNs are received.
    pub scn_portal: Option<(IpAddr, u16)>,
}

impl InitiatorNode {
    fn source(&self) -> Attribute {
        Attribute::string(Tag::ISCSI_NAME, &self.name)
    }
}

/// DevAttrReg (§5.6.5.1): key is the Entity Identifier; operating attributes
/// are the entity, then its portal, then the node. With `replace` the server
/// drops whatever the entity held before.
pub fn register_initiator(xid: u16, node: &InitiatorNode, replace: bool) -> Message {
    let mut m = Message::request(FunctionId::DEV_ATTR_REG, xid, node.source());
    if replace {
        m.flags = m.flags.with(Flags::REPLACE);
    }
    m.keys.push(Attribute::string(Tag::ENTITY_IDENTIFIER, &node.entity));
    m.operating.push(Attribute::string(Tag::ENTITY_IDENTIFIER, &node.entity));
    m.operating.push(Attribute::u32(Tag::ENTITY_PROTOCOL, attr::ENTITY_PROTOCOL_ISCSI));
    if let Some((ip, port)) = node.scn_portal {
        m.operating.push(Attribute::ip(Tag::PORTAL_IP_ADDRESS, ip));
        m.operating.push(Attribute::port(Tag::PORTAL_PORT, port, false));
        m.operating.push(Attribute::port(Tag::SCN_PORT, port, false));
    }
    m.operating.push(Attribute::string(Tag::ISCSI_NAME, &node.name));
    m.operating.push(Attribute::u32(Tag::ISCSI_NODE_TYPE, NODE_TYPE_INITIATOR));
    if let Some(alias) = &node.alias {
        m.operating.push(Attribute::string(Tag::ISCSI_ALIAS, alias));
    }
    m
}

/// DevDereg (§5.6.5.4): no keys; the operating Entity Identifier removes the
/// entity with its portals and nodes.
pub fn deregister_entity(xid: u16, source: &str, entity: &str) -> Message {
    let mut m = Message::request(FunctionId::DEV_DEREG, xid, Attribute::string(Tag::ISCSI_NAME, source));
    m.operating.push(Attribute::string(Tag::ENTITY_IDENTIFIER, entity));
    m
}

/// What a target query asks back: enough to group nodes with their entity,
/// portals and portal groups (§5.6.5.2).
const QUERY_ATTRS: [Tag; 10] = [
    Tag::ENTITY_IDENTIFIER,
    Tag::PORTAL_IP_ADDRESS,
    Tag::PORTAL_PORT,
    Tag::ISCSI_NAME,
    Tag::ISCSI_NODE_TYPE,
    Tag::ISCSI_ALIAS,
    Tag::PG_ISCSI_NAME,
    Tag::PG_PORTAL_IP_ADDR,
    Tag::PG_PORTAL_PORT,
    Tag::PG_TAG,
];

/// DevAttrQry (§5.6.5.2) for every target the source may see: key iSCSI
/// Node Type = Target; the server scopes the answer to the source's
/// discovery domains.
pub fn query_targets(xid: u16, source: &str) -> Message {
    let mut m = Message::request(FunctionId::DEV_ATTR_QRY, xid, Attribute::string(Tag::ISCSI_NAME, source));
    m.keys.push(Attribute::u32(Tag::ISCSI_NODE_TYPE, NODE_TYPE_TARGET));
    m.operating.extend(QUERY_ATTRS.iter().map(|&t| Attribute::nil(t)));
    m
}

/// DevAttrQry for one node by name (e.g. after an SCN named it).
pub fn query_node(xid: u16, source: &str, name: &str) -> Message {
    let mut m = Message::request(FunctionId::DEV_ATTR_QRY, xid, Attribute::string(Tag::ISCSI_NAME, source));
    m.keys.push(Attribute::string(Tag::ISCSI_NAME, name));
    m.operating.extend(QUERY_ATTRS.iter().map(|&t| Attribute::nil(t)));
    m
}

/// DevGetNext (§5.6.5.3): the node after `last` (or the first), among the
/// targets. Walks the database one node per exchange.
pub fn get_next_target(xid: u16, source: &str, last: Option<&str>) -> Message {
    let mut m = Message::request(FunctionId::DEV_GET_NEXT, xid, Attribute::string(Tag::ISCSI_NAME, source));
    m.keys.push(match last {
        Some(name) => Attribute::string(Tag::ISCSI_NAME, name),
        None => Attribute::nil(Tag::ISCSI_NAME),
    });
    m.operating.push(Attribute::u32(Tag::ISCSI_NODE_TYPE, NODE_TYPE_TARGET));
    m
}

/// The name DevGetNextRsp returns as its key, `None` at the end.
pub fn get_next_name(rsp: &Message) -> Result<Option<String>, Error> {
    expect(rsp, FunctionId::DEV_GET_NEXT)?;
    match attr::find(&rsp.keys, Tag::ISCSI_NAME) {
        Some(a) if !a.is_nil() => Ok(Some(a.as_str()?.to_owned())),
        _ => Ok(None),
    }
}

/// SCNReg (§5.6.5.5): key is our node, the operating attribute the bitmap.
pub fn scn_register(xid: u16, source: &str, bitmap: ScnBitmap) -> Message {
    let mut m = Message::request(FunctionId::SCN_REG, xid, Attribute::string(Tag::ISCSI_NAME, source));
    m.keys.push(Attribute::string(Tag::ISCSI_NAME, source));
    m.operating.push(Attribute::u32(Tag::ISCSI_SCN_BITMAP, bitmap.0));
    m
}

/// SCNDereg (§5.6.5.6): key is our node; no operating attributes.
pub fn scn_deregister(xid: u16, source: &str) -> Message {
    let mut m = Message::request(FunctionId::SCN_DEREG, xid, Attribute::string(Tag::ISCSI_NAME, source));
    m.keys.push(Attribute::string(Tag::ISCSI_NAME, source));
    m
}

/// Checks that `rsp` is the response to `request`; returns its status.
pub fn expect(rsp: &Message, request: FunctionId) -> Result<Status, Error> {
    if rsp.function != request.response() {
        return Err(Error::Malformed(format!("expected {}, got {}", request.response(), rsp.function)));
    }
    rsp.status.ok_or_else(|| Error::Malformed(format!("{} without status", rsp.function)))
}

/// One way to reach a target: a portal and its portal group tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IsnsPortal {
    pub addr: IpAddr,
    pub port: u16,
    pub tpgt: u16,
}

/// A target as the iSNS server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsnsTarget {
    pub name: String,
    pub alias: Option<String>,
    pub portals: Vec<IsnsPortal>,
}

#[derive(Default)]
struct Node {
    entity: Option<String>,
    node_type: Option<u32>,
    alias: Option<String>,
}

#[derive(Default)]
struct Pg {
    name: String,
    ip: Option<IpAddr>,
    port: Option<u16>,
    tag: Option<u32>,
}

enum Current {
    None,
    Portal(Option<String>, Option<IpAddr>, Option<u16>),
    Node(String),
    Pg(Pg),
}

/// Reads the targets out of a DevAttrQryRsp. The operating attributes list
/// objects one after another, each starting with its key attribute
/// (§5.6.5.2): Entity Identifier, Portal IP, iSCSI Name or PG iSCSI Name.
/// A target is reachable through the portals of its Portal Group objects
/// (§3.4); a PG with a NIL tag grants no access. A target without any PG is
/// taken as reachable through its entity's portals with tag 1 (the default
/// portal group of RFC 7143). "No Such Entry" is an empty list (open-isns
/// answers it to a query that matched nothing).
pub fn targets_from_query(rsp: &Message) -> Result<Vec<IsnsTarget>, Error> {
    let status = expect(rsp, FunctionId::DEV_ATTR_QRY)?;
    if status == Status::NO_SUCH_ENTRY {
        return Ok(Vec::new());
    }
    if !status.is_success() {
        return Err(Error::Malformed(format!("DevAttrQry failed: {status}")));
    }
    let mut entity: Option<String> = None;
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut node_order: Vec<String> = Vec::new();
    let mut portals: Vec<(Option<String>, IpAddr, u16)> = Vec::new();
    let mut pgs: Vec<Pg> = Vec::new();
    let mut cur = Current::None;

    let close = |cur: &mut Current, portals: &mut Vec<_>, pgs: &mut Vec<Pg>| match std::mem::replace(cur, Current::None)
    {
        Current::Portal(e, Some(ip), Some(port)) => portals.push((e, ip, port)),
        Current::Pg(pg) => pgs.push(pg),
        _ => {}
    };
    for a in &rsp.operating {
        if a.is_nil() && a.tag != Tag::PG_TAG {
            continue;
        }
        match a.tag {
            Tag::ENTITY_IDENTIFIER => {
                close(&mut cur, &mut portals, &mut pgs);
                entity = Some(a.as_str()?.to_owned());
            }
            Tag::PORTAL_IP_ADDRESS => {
                close(&mut cur, &mut portals, &mut pgs);
                cur = Current::Portal(entity.clone(), Some(a.as_ip()?), None);
            }
            Tag::PORTAL_PORT => {
                if let Current::Portal(_, _, port) = &mut cur {
                    *port = Some(a.as_port()?.0);
                }
            }
            Tag::ISCSI_NAME => {
                close(&mut cur, &mut portals, &mut pgs);
                let name = a.as_str()?.to_owned();
                if name.is_empty() {
                    return Err(Error::Malformed("DevAttrQryRsp lists an empty iSCSI Name".into()));
                }
                if !nodes.contains_key(&name) {
                    node_order.push(name.clone());
                }
                let n = nodes.entry(name.clone()).or_default();
                if n.entity.is_none() {
                    n.entity = entity.clone();
                }
                cur = Current::Node(name);
            }
            Tag::ISCSI_NODE_TYPE | Tag::ISCSI_ALIAS => {
                if let Current::Node(name) = &cur
                    && let Some(n) = nodes.get_mut(name)
                {
                    if a.tag == Tag::ISCSI_NODE_TYPE {
                        n.node_type = Some(a.as_u32()?);
                    } else {
                        n.alias = Some(a.as_str()?.to_owned());
                    }
                }
            }
            Tag::PG_ISCSI_NAME => {
                close(&mut cur, &mut portals, &mut pgs);
                cur = Current::Pg(Pg { name: a.as_str()?.to_owned(), ..Pg::default() });
            }
            Tag::PG_PORTAL_IP_ADDR | Tag::PG_PORTAL_PORT | Tag::PG_TAG => {
                if let Current::Pg(pg) = &mut cur {
                    match a.tag {
                        Tag::PG_PORTAL_IP_ADDR => pg.ip = Some(a.as_ip()?),
                        Tag::PG_PORTAL_PORT => pg.port = Some(a.as_port()?.0),
                        _ if a.is_nil() => pg.tag = None,
                        _ => pg.tag = Some(a.as_u32()?),
                    }
                }
            }
            _ => {}
        }
    }
    close(&mut cur, &mut portals, &mut pgs);

    let mut out = Vec::new();
    for name in node_order {
        let Some(node) = nodes.get(&name) else { continue };
        if node.node_type.is_some_and(|t| t & NODE_TYPE_TARGET == 0) {
            continue;
        }
        let mut reach: Vec<IsnsPortal> = pgs
            .iter()
            .filter(|pg| pg.name == name)
            .filter_map(|pg| {
                let tpgt = u16::try_from(pg.tag?).ok()?;
                Some(IsnsPortal { addr: pg.ip?, port: pg.port?, tpgt })
            })
            .collect();
        if reach.is_empty() && !pgs.iter().any(|pg| pg.name == name) {
            reach = portals
                .iter()
                .filter(|(e, _, _)| e.is_some() && *e == node.entity)
                .map(|&(_, addr, port)| IsnsPortal { addr, port, tpgt: 1 })
                .collect();
        }
        reach.sort();
        reach.dedup();
        out.push(IsnsTarget { name, alias: node.alias.clone(), portals: reach });
    }
    Ok(out)
}

/// One change an SCN reports: the bitmap and the node it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScnChange {
    pub bitmap: ScnBitmap,
    pub name: String,
}

/// A State Change Notification from the server (§5.6.5.8): our node (the
/// destination), a timestamp, then SCN bitmap + iSCSI Name pairs (a
/// management SCN may follow a pair with DD IDs, which are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scn {
    pub destination: String,
    pub timestamp: Option<u64>,
    pub changes: Vec<ScnChange>,
}

/// Reads an SCN message.
pub fn parse_scn(m: &Message) -> Result<Scn, Error> {
    if m.function != FunctionId::SCN {
        return Err(Error::UnexpectedFunction(m.function));
    }
    let mut attrs = m.keys.iter().peekable();
    let destination = match attrs.next() {
        Some(a) if a.tag == Tag::ISCSI_NAME => a.as_str()?.to_owned(),
        _ => return Err(Error::Malformed("SCN does not start with the destination iSCSI Name".into())),
    };
    let mut timestamp = None;
    if let Some(a) = attrs.next_if(|a| a.tag == Tag::TIMESTAMP) {
        timestamp = Some(a.as_u64()?);
    }
    let mut changes = Vec::new();
    while let Some(a) = attrs.next() {
        if a.tag != Tag::ISCSI_SCN_BITMAP {
            continue;
        }
        let bitmap = ScnBitmap(a.as_u32()?);
        match attrs.next() {
            Some(n) if n.tag == Tag::ISCSI_NAME => changes.push(ScnChange { bitmap, name: n.as_str()?.to_owned() }),
            _ => return Err(Error::Malformed("SCN bitmap not followed by an iSCSI Name".into())),
        }
    }
    Ok(Scn { destination, timestamp, changes })
}

/// SCNRsp (§5.7.5.8): success and the destination node that received it.
pub fn scn_response(scn: &Message, destination: &str, status: Status) -> Message {
    let mut r = Message::response(FunctionId::SCN, scn.transaction_id, status, Flags::CLIENT);
    r.keys.push(Attribute::string(Tag::ISCSI_NAME, destination));
    r
}

/// ESIRsp (§5.7.5.13): echoes the ESI's Entity Identifier and portal.
pub fn esi_response(esi: &Message) -> Message {
    let mut r = Message::response(FunctionId::ESI, esi.transaction_id, Status::SUCCESS, Flags::CLIENT);
    r.keys = esi.keys.clone();
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rsp(operating: Vec<Attribute>) -> Message {
        let mut m = Message::response(FunctionId::DEV_ATTR_QRY, 1, Status::SUCCESS, Flags::SERVER);
        m.operating = operating;
        m
    }

    #[test]
    fn registration_names_entity_portal_and_initiator_node() {
        let node = InitiatorNode {
            name: "iqn.2026-12.rs:i".into(),
            entity: "rsiscsi:i".into(),
            alias: None,
            scn_portal: Some((ip("127.0.0.1"), 40000)),
        };
        let m = register_initiator(4, &node, true);
        assert!(m.flags.contains(Flags::REPLACE));
        let tags: Vec<u32> = m.operating.iter().map(|a| a.tag.0).collect();
        assert_eq!(tags, [1, 2, 16, 17, 23, 32, 33]);
        assert_eq!(attr::find(&m.operating, Tag::ISCSI_NODE_TYPE).unwrap().as_u32().unwrap(), NODE_TYPE_INITIATOR);
        assert_eq!(attr::find(&m.operating, Tag::SCN_PORT).unwrap().as_port().unwrap(), (40000, false));
        let back = Message::decode_bytes(&m.encode()).unwrap().unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn query_asks_for_targets_with_nil_attributes() {
        let m = query_targets(2, "iqn.i");
        assert_eq!(m.keys, [Attribute::u32(Tag::ISCSI_NODE_TYPE, NODE_TYPE_TARGET)]);
        assert!(m.operating.iter().all(Attribute::is_nil));
        assert_eq!(m.source.as_ref().unwrap().as_str().unwrap(), "iqn.i");
    }

    /// The shape open-isns answers: entity, node, portal, PG, repeated.
    #[test]
    fn targets_are_read_through_their_portal_groups() {
        let m = rsp(vec![
            Attribute::string(Tag::ENTITY_IDENTIFIER, "lab"),
            Attribute::string(Tag::ISCSI_NAME, "iqn.t:1"),
            Attribute::u32(Tag::ISCSI_NODE_TYPE, NODE_TYPE_TARGET),
            Attribute::string(Tag::ISCSI_ALIAS, "disk1"),
            Attribute::ip(Tag::PORTAL_IP_ADDRESS, ip("127.0.0.1")),
            Attribute::port(Tag::PORTAL_PORT, 3260, false),
            Attribute::string(Tag::PG_ISCSI_NAME, "iqn.t:1"),
            Attribute::ip(Tag::PG_PORTAL_IP_ADDR, ip("127.0.0.1")),
            Attribute::port(Tag::PG_PORTAL_PORT, 3260, false),
            Attribute::u32(Tag::PG_TAG, 1),
            Attribute::string(Tag::ENTITY_IDENTIFIER, "lab"),
            Attribute::string(Tag::ISCSI_NAME, "iqn.t:2"),
            Attribute::u32(Tag::ISCSI_NODE_TYPE, NODE_TYPE_TARGET),
            Attribute::string(Tag::PG_ISCSI_NAME, "iqn.t:2"),
            Attribute::ip(Tag::PG_PORTAL_IP_ADDR, ip("::1")),
            Attribute::port(Tag::PG_PORTAL_PORT, 3261, false),
            Attribute::u32(Tag::PG_TAG, 7),
            // A PG with a NIL tag grants no access (§3.4).
            Attribute::string(Tag::PG_ISCSI_NAME, "iqn.t:2"),
            Attribute::ip(Tag::PG_PORTAL_IP_ADDR, ip("127.0.0.1")),
            Attribute::port(Tag::PG_PORTAL_PORT, 3260, false),
            Attribute::nil(Tag::PG_TAG),
        ]);
        let t = targets_from_query(&m).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "iqn.t:1");
        assert_eq!(t[0].alias.as_deref(), Some("disk1"));
        assert_eq!(t[0].portals, [IsnsPortal { addr: ip("127.0.0.1"), port: 3260, tpgt: 1 }]);
        assert_eq!(t[1].portals, [IsnsPortal { addr: ip("::1"), port: 3261, tpgt: 7 }]);
    }

    #[test]
    fn target_without_portal_group_uses_its_entity_portals() {
        let m = rsp(vec![
            Attribute::string(Tag::ENTITY_IDENTIFIER, "a"),
            Attribute::ip(Tag::PORTAL_IP_ADDRESS, ip("10.0.0.1")),
            Attribute::port(Tag::PORTAL_PORT, 3260, false),
            Attribute::string(Tag::ISCSI_NAME, "iqn.t:a"),
            Attribute::string(Tag::ENTITY_IDENTIFIER, "b"),
            Attribute::ip(Tag::PORTAL_IP_ADDRESS, ip("10.0.0.2")),
            Attribute::port(Tag::PORTAL_PORT, 3260, false),
        ]);
        let t = targets_from_query(&m).unwrap();
        assert_eq!(t[0].portals, [IsnsPortal { addr: ip("10.0.0.1"), port: 3260, tpgt: 1 }]);
    }

    #[test]
    fn initiators_and_empty_answers_are_no_targets() {
        let m = rsp(vec![
            Attribute::string(Tag::ISCSI_NAME, "iqn.i"),
            Attribute::u32(Tag::ISCSI_NODE_TYPE, NODE_TYPE_INITIATOR),
        ]);
        assert!(targets_from_query(&m).unwrap().is_empty());
        let none = Message::response(FunctionId::DEV_ATTR_QRY, 1, Status::NO_SUCH_ENTRY, Flags::SERVER);
        assert!(targets_from_query(&none).unwrap().is_empty());
        let bad = Message::response(FunctionId::DEV_ATTR_QRY, 1, Status::SOURCE_UNKNOWN, Flags::SERVER);
        let e = targets_from_query(&bad).unwrap_err().to_string();
        assert!(e.contains("Source Unknown (6)"), "{e}");
        let wrong = Message::response(FunctionId::DEV_ATTR_REG, 1, Status::SUCCESS, Flags::SERVER);
        assert!(targets_from_query(&wrong).is_err());
    }

    #[test]
    fn bad_values_in_an_answer_are_errors() {
        let m = rsp(vec![Attribute::string(Tag::PG_ISCSI_NAME, "x"), Attribute::u32(Tag::PG_PORTAL_IP_ADDR, 1)]);
        assert!(matches!(targets_from_query(&m), Err(Error::AttributeValue { .. })));
    }

    #[test]
    fn scn_lists_changes_and_gets_its_response() {
        let mut m = Message::request(FunctionId::SCN, 77, Attribute::nil(Tag::DELIMITER));
        m.source = None;
        m.keys = vec![
            Attribute::string(Tag::ISCSI_NAME, "iqn.me"),
            Attribute::u64(Tag::TIMESTAMP, 5),
            Attribute::u32(Tag::ISCSI_SCN_BITMAP, ScnBitmap::OBJECT_ADDED.0),
            Attribute::string(Tag::ISCSI_NAME, "iqn.t:new"),
            Attribute::u32(Tag::ISCSI_SCN_BITMAP, ScnBitmap::OBJECT_REMOVED.0),
            Attribute::string(Tag::ISCSI_NAME, "iqn.t:old"),
            Attribute::u32(Tag::DD_ID, 3),
        ];
        let m = Message::decode_bytes(&m.encode()).unwrap().unwrap();
        let scn = parse_scn(&m).unwrap();
        assert_eq!(scn.destination, "iqn.me");
        assert_eq!(scn.timestamp, Some(5));
        assert_eq!(scn.changes.len(), 2);
        assert!(scn.changes[0].bitmap.is_added() && !scn.changes[0].bitmap.is_removed());
        assert!(scn.changes[1].bitmap.is_removed());
        let r = scn_response(&m, "iqn.me", Status::SUCCESS);
        let bytes = r.encode();
        assert_eq!(bytes[2..4], [0x80, 0x08]);
        assert_eq!(bytes[8..10], [0, 77]);
        assert_eq!(Message::decode_bytes(&bytes).unwrap().unwrap(), r);
    }

    #[test]
    fn scn_without_names_is_refused() {
        let mut m = Message::request(FunctionId::SCN, 1, Attribute::nil(Tag::DELIMITER));
        m.source = None;
        m.keys = vec![Attribute::string(Tag::ISCSI_NAME, "iqn.me"), Attribute::u32(Tag::ISCSI_SCN_BITMAP, 8)];
        assert!(parse_scn(&m).is_err());
        m.keys.clear();
        assert!(parse_scn(&m).is_err());
    }

    #[test]
    fn get_next_walks_by_name() {
        let m = get_next_target(1, "iqn.i", None);
        assert!(m.keys[0].is_nil());
        let mut r = Message::response(FunctionId::DEV_GET_NEXT, 1, Status::SUCCESS, Flags::SERVER);
        r.keys.push(Attribute::string(Tag::ISCSI_NAME, "iqn.t:1"));
        assert_eq!(get_next_name(&r).unwrap().as_deref(), Some("iqn.t:1"));
        r.keys.clear();
        assert_eq!(get_next_name(&r).unwrap(), None);
    }
}
