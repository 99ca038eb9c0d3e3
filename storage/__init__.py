"""Where versions and datasets are kept, on a local disk or in an object store; no TensorFlow here.

- :mod:`storage.roots`: a model root is a directory or a URL (``s3://bucket/prefix``); telling them apart;
- :mod:`storage.local`: version directories on a local filesystem: numbering, atomic publish
  (staging directory, fsync, rename without replace), copying, reading a manifest;
- :mod:`storage.object_store`: the same in a bucket, where the completion marker is written last;
- :mod:`storage.publish`: a staged version directory published to either kind of root;
- :mod:`storage.model_roots`: listing the published versions of a root (a directory in place);
- :mod:`storage.model_cache`: a bucket's versions listed and copied into a local cache before loading;
- :mod:`storage.datasets`: fine-tuning datasets beside a bucket model root, for replicas;
- :mod:`storage.errors`: what goes wrong, in words a user can act on.

The exporter, the server and fine-tuning all store through this package.
"""
