"""Dagster definitions, jobs, schedules, sensors, resource choices and the ``rdtf`` CLI."""
