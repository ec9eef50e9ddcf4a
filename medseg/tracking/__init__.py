"""Stage: MLflow. The run tracker (``tracker``), model URIs (``registry``), reproducibility tags
and the dataset record (``lineage``), the runs table (``runs``).
"""
