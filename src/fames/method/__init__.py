"""The method layer: estimate, select, calibrate, compensate, energy and assignments (see DESIGN.md)."""
