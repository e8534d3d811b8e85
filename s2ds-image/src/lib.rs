//! S2DS, the SciStream data server (work in progress, issue #12).
