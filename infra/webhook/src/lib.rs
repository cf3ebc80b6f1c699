//! Client callbacks over HTTP, signed the Standard Webhooks way.
