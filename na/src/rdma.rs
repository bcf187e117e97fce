//! RDMA device discovery (`ibverbs` feature): what `ofi+verbs` could open on this machine.

/// One RDMA device as the verbs library lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaDevice {
    /// Device name (`"mlx5_0"`).
    pub name: String,
}

/// Lists the RDMA devices of this host through `ibverbs::devices()`.
///
/// No device, no verbs kernel support (`ENOSYS`), or a build without the `ibverbs` feature all
/// mean "none": an empty list, with a `debug` event saying why.
#[doc(alias = "ibv_get_device_list")]
pub fn rdma_devices() -> Vec<RdmaDevice> {
    imp()
}

#[cfg(feature = "ibverbs")]
fn imp() -> Vec<RdmaDevice> {
    match ibverbs::devices() {
        Ok(list) => list
            .iter()
            .map(|d| RdmaDevice {
                name: d
                    .name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            })
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "na: no RDMA devices (verbs unavailable)");
            Vec::new()
        }
    }
}

#[cfg(not(feature = "ibverbs"))]
fn imp() -> Vec<RdmaDevice> {
    tracing::debug!("na: built without the ibverbs feature: no RDMA devices listed");
    Vec::new()
}

#[cfg(all(test, not(loom)))]
mod tests {
    #[test]
    fn no_device_here_means_an_empty_list() {
        // This machine (and CI) has no RDMA device; a machine with one lists it by name.
        let devs = super::rdma_devices();
        let sysfs = std::fs::read_dir("/sys/class/infiniband")
            .map(|d| d.count())
            .unwrap_or(0);
        if cfg!(feature = "ibverbs") {
            assert_eq!(devs.len(), sysfs, "{devs:?}");
            assert!(devs.iter().all(|d| !d.name.is_empty()));
        } else {
            assert!(devs.is_empty());
        }
    }
}
