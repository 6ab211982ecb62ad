#!/usr/bin/env bash
# Served against offline on the bundled tritonserver, PNG and JPEG request bodies: hrnet and
# squeeze, OpenVINO int8 python networks, BLS. Usage: run.sh SCRATCH_DIR ROUND_TAG
set -euo pipefail
mkdir -p "${1:-/tmp/servebench}" && cd "${1:-/tmp/servebench}"
tag=${2:-r1}
python -c "
from PIL import Image; from pathlib import Path
from hgdeploy.base.images import sample_images
for d in ('png', 'jpeg'): Path(d).mkdir(exist_ok=True)
for n, px in sample_images():
    Image.fromarray(px).save(f'png/{n}.png'); Image.fromarray(px).save(f'jpeg/{n}.jpg', quality=90)"
for m in hrnet squeeze; do
  [ -f ${m}_ov_int8.xml ] || { hgdeploy export --model $m --dynamic-batch --output ${m}_dyn.onnx;
    hgdeploy build --model $m --backend openvino --int8 --onnx ${m}_dyn.onnx --output ${m}_ov_int8.xml; }
  [ -d ${m}_repo ] || hgdeploy repository --model $m --artifact ${m}_ov_int8.xml --python-network \
    --max-batch 4 --output ${m}_repo
  for d in png jpeg; do
    hgdeploy bench --op pipeline --model $m --artifact ${m}_ov_int8.xml --images $d --iterations 3 \
      --output offline_${m}_${d}_$tag --force
    hgdeploy loadtest --repository ${m}_repo --images $d --concurrency 1 --concurrency 2 \
      --concurrency 4 --concurrency 8 --requests 48 --output load_${m}_${d}_$tag --force
    cp load_${m}_${d}_$tag/serving.json ${m}_${d}_served_$tag.json
    cp load_${m}_${d}_$tag/serving.md ${m}_${d}_served_$tag.md
    cp offline_${m}_${d}_$tag/pipeline.json ${m}_${d}_offline_$tag.json
  done
done
