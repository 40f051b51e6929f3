"""Flag definitions loaded on first start; installed as the package `control_plane.flags`."""
