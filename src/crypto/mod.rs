//! Card-security primitives: PIN blocks, PIN verification values, MACs and
//! the keys behind them.
//!
//! Why a module of its own: everything that touches a PIN, a PIN block or a
//! key lives here, as pure functions (no I/O, no clock, no randomness), so
//! the rules of INTERFACE §6 are enforced in one place: secrets are
//! newtypes that zeroize on drop and print as `<redacted>`, errors never echo
//! secret input, comparisons of secrets are constant time.
//!
//! - [`keys`]: [`PinKey`], [`MacKey`], [`PvKey`], [`MasterKey`]; hex parsing;
//!   authenticated key wrapping bound to a label.
//! - [`pinblock`]: ISO 9564 format 0 under 3DES (DE52); the [`Pin`] newtype.
//! - [`pvv`]: the PIN verification value a bank stores instead of a PIN.
//! - [`mac`]: HMAC-SHA256 truncated to 8 bytes for DE64/DE128.
//!
//! This is a software host: it is not a PCI PIN-compliant device, and clear
//! PINs exist in its memory while a PIN is verified.

pub mod keys;
pub mod mac;
pub mod pinblock;
pub mod pvv;

pub use keys::{KeyError, MacKey, MasterKey, PinKey, PvKey};
pub use mac::{compute_mac, mac_input, verify_mac, MAC_LEN};
pub use pinblock::{decode_pin, encrypt_pin_block, Pin, PinBlockError};
pub use pvv::{pin_verification_value, verify_pvv};
