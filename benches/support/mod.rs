//! Shared by the benches: the counting global allocator of `palisade-testkit`, so each bench can
//! print heap allocations per call before criterion starts.

pub use palisade_testkit::alloc::allocs_per_call;

#[global_allocator]
static GLOBAL: palisade_testkit::alloc::CountingAlloc = palisade_testkit::alloc::CountingAlloc;
