//! Topology and memory binding through hwloc 2 (feature `hwloc`), as DAOS's `dss_topo_init` and
//! `hwloc_set_membind` use it.
//!
//! Binding crate: `hwlocality` (a maintained, safe binding of hwloc 2.x). The `hwloc2` crate was
//! considered and not used: it had a single release, in 2020, and no maintenance since. CPU binding
//! of a stream without this feature goes through `sched_setaffinity`
//! ([`crate::XstreamHandle::set_cpubind`]).

use crate::error::{Error, Result};
use hwlocality::cpu::binding::CpuBindingFlags;
use hwlocality::cpu::cpuset::CpuSet;
use hwlocality::memory::binding::{MemoryBindingFlags, MemoryBindingPolicy};
use hwlocality::memory::nodeset::NodeSet;
use hwlocality::object::types::ObjectType;

/// The machine's topology (`hwloc_topology_t`).
#[doc(alias = "hwloc_topology_t")]
pub struct Topology {
    t: hwlocality::Topology,
}

fn sys(e: impl std::fmt::Display) -> Error {
    Error::Sys(format!("hwloc: {e}"))
}

impl Topology {
    /// Loads the topology of this machine (`hwloc_topology_init` + `hwloc_topology_load`).
    #[doc(alias = "hwloc_topology_load")]
    pub fn new() -> Result<Topology> {
        hwlocality::Topology::new()
            .map(|t| Topology { t })
            .map_err(sys)
    }

    fn count(&self, ty: ObjectType) -> usize {
        self.t.objects_with_type(ty).count()
    }

    /// Number of cores (DAOS sizes its target count from this).
    pub fn num_cores(&self) -> usize {
        self.count(ObjectType::Core)
    }

    /// Number of hardware threads (PUs).
    pub fn num_pus(&self) -> usize {
        self.count(ObjectType::PU)
    }

    /// Number of NUMA nodes.
    pub fn num_numa_nodes(&self) -> usize {
        self.count(ObjectType::NUMANode)
    }

    /// OS indices of the PUs of core `core` (logical order), for binding a stream to it.
    pub fn core_cpus(&self, core: usize) -> Option<Vec<usize>> {
        let c = self.t.objects_with_type(ObjectType::Core).nth(core)?;
        let set = c.cpuset()?;
        Some(set.iter_set().map(usize::from).collect())
    }

    /// Binds the calling OS thread (a stream binds itself from one of its ULTs) to `cpus`
    /// (`hwloc_set_cpubind` with `HWLOC_CPUBIND_THREAD`).
    #[doc(alias = "hwloc_set_cpubind")]
    pub fn bind_current_thread(&self, cpus: &[usize]) -> Result<()> {
        let mut set = CpuSet::new();
        for &c in cpus {
            set.set(c);
        }
        self.t.bind_cpu(&set, CpuBindingFlags::THREAD).map_err(sys)
    }

    /// Binds the calling OS thread's memory allocations to NUMA node `node` (logical index)
    /// (`hwloc_set_membind` with `HWLOC_MEMBIND_BIND`, `HWLOC_MEMBIND_THREAD`).
    #[doc(alias = "hwloc_set_membind")]
    pub fn membind_current_thread(&self, node: usize) -> Result<()> {
        let n = self
            .t
            .objects_with_type(ObjectType::NUMANode)
            .nth(node)
            .ok_or_else(|| Error::Sys(format!("hwloc: no NUMA node {node}")))?;
        let set: NodeSet = n
            .nodeset()
            .ok_or_else(|| sys("NUMA node without nodeset"))?
            .clone_target();
        self.t
            .bind_memory(&set, MemoryBindingPolicy::Bind, MemoryBindingFlags::THREAD)
            .map_err(sys)
    }
}
