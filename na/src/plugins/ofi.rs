//! Plugin `ofi` (placeholder while it is being written).

use crate::error::{Error, Result};
use crate::plugin::{InfoString, InitOptions, Plugin};
use crate::sync::Arc;

/// Whether a bare protocol name selects this plugin.
pub(crate) fn check_protocol(_proto: &str) -> bool {
    false
}

/// Opens the plugin.
pub(crate) fn initialize(
    _info: &InfoString,
    _listen: bool,
    _opts: &InitOptions,
) -> Result<Arc<dyn Plugin>> {
    Err(Error::OpNotSupported)
}
