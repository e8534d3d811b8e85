//! The `scistream.io/v1alpha1` API.
