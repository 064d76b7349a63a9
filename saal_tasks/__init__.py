"""saal_tasks: Sharpness-Aware Active Learning for classification, detection and segmentation.

Importing the package does no work; components register themselves when the registries in
:mod:`saal_tasks.registry` first build them.
"""
__version__ = '0.1.0'
