"""Task accuracy of deployments: labeled COCO-format sets, pycocotools metrics, `evaluate`."""
