//! sluice-formats: bytes in, tagged events out. It turns an SQS notification body into the
//! S3 objects it names ([`notification`]), an object's bytes into decompressed bytes
//! ([`decompress`], by magic bytes) and decompressed bytes into single-line events with their
//! Devo tags ([`processor`], per input configuration and object key).
//!
//! It is plain blocking code over `&str`, `Read` and `BufRead`: no AWS, no async runtime, no
//! network, no knowledge of the relay. What it must respect from elsewhere (the longest tag the
//! receiver accepts) it is given as a value. The collector (`sluice`) fetches objects, drives
//! these functions and batches their events; adding or changing a format happens here and never
//! touches SQS, S3 or delivery code.

pub mod decompress;
pub mod notification;
pub mod processor;
