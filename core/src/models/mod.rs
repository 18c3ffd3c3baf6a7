//! Model architectures, each reading its weights in place from a [`crate::format::SafeTensors`].

pub mod decoder;
