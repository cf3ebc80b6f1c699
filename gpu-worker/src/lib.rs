//! The worker loop: drains a job queue, runs the generator, stores audio, reports completion.
