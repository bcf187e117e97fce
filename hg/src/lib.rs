//! # hg — the RPC core over `na` (Mercury HG), being built (issue 4)
