//! Topology and memory binding through hwloc 2 (feature `hwloc`; filled in below).
