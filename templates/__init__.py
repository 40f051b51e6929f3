"""Page templates and static files; installed as the package `control_plane.templates`."""
