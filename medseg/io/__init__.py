"""Stage: files. Scan names (``paths``), header geometry (``geometry``), voxels and geometry-exact
writing (``volumes``), the SimpleITK reader for MONAI (``readers``), the one atomic writer (``write``).
"""
