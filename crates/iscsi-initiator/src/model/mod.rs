//! The management model, shaped after the Windows iSCSI initiator
//! (`iscsidsc.h`, `iscsierr.h`, the `MSIscsiInitiator_*` / `MSiSCSI_*` WMI
//! classes): identifiers, login options and security flags, status codes and
//! MC/S load balancing. Pure types: no I/O.
//!
//! ```
//! use iscsi_initiator::model::{
//!     AuthType, Balancer, IsdscCode, LoadBalancePolicy, LoginOptions, PathView, UniqueSessionId,
//! };
//! use iscsi_proto::chap::Secret;
//!
//! let id: UniqueSessionId = "fffffa800d008430-4000013700000001".parse().unwrap();
//! assert_eq!(id.to_string(), "fffffa800d008430-4000013700000001");
//!
//! let opts = LoginOptions::default().with_auth_type(AuthType::Chap).with_password(Secret::new("too short"));
//! assert_eq!(opts.validate(false).unwrap_err().code, IsdscCode::InvalidChapSecret);
//!
//! let mut balancer = Balancer::new("weighted".parse::<LoadBalancePolicy>().unwrap());
//! let paths = [
//!     PathView { available: true, primary: true, weight: 3, ..PathView::default() },
//!     PathView { available: true, primary: false, weight: 1, ..PathView::default() },
//! ];
//! assert_eq!(balancer.pick(&paths), Some(0));
//! ```

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
