//! Tests of the simulated Mimecast SIEM endpoints over real HTTP.
