"""Filled in by later work; see the issue tracker."""
