//! Storage: content-addressed module blobs on disk. (The job store comes with the queue.)

mod blobs;

pub use blobs::{BlobError, BlobStore};
