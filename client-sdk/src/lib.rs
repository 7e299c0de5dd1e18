//! Conclave client SDK: identity, secure containers, meeting keys, SFrame media
//! encryption and safety codes.

#![forbid(unsafe_code)]

pub mod safety;
