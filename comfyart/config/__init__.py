"""Configuration: the sections of the YAML file (``sections``, ``fleet``), the root ``Settings`` and how it is
loaded (``settings``), and the generated reference (``reference``)."""
