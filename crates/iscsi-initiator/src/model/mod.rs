//! The management model, shaped after the Windows iSCSI initiator
//! (`iscsidsc.h`, `iscsierr.h`, the `MSIscsiInitiator_*` / `MSiSCSI_*` WMI
//! classes): identifiers, login options and security flags, status codes and
//! MC/S load balancing. Pure types: no I/O.

pub mod ids;
pub mod options;
pub mod policy;
pub mod status;

pub use ids::{IdAllocator, IdKind, IdParseError, UniqueConnectionId, UniqueSessionId};
pub use options::{
    AuthType, DigestType, ISCSI_ALL_INITIATOR_PORTS, ISCSI_ANY_INITIATOR_PORT, IkeMode, InformationSpecified,
    IpsecMode, IpsecRequest, LoginFlags, LoginOptions, Portal, SecurityFlags,
};
pub use policy::{Balancer, LoadBalancePolicy, PathView};
pub use status::{IsdscCode, Status};
