#!/usr/bin/env bash
# BLS vs ensemble on the bundled tritonserver: hrnet and squeeze, OpenVINO int8, python network.
set -euo pipefail
mkdir -p "${1:-/tmp/ensbench}" && cd "${1:-/tmp/ensbench}"  # a scratch directory
H=hgdeploy  # the project env's (make install)
PY=python
$PY -c "
from PIL import Image; from pathlib import Path
from hgdeploy.base.images import sample_images
Path('photos').mkdir(exist_ok=True)
for n, px in sample_images(): Image.fromarray(px).save(f'photos/{n}.png')"
for m in hrnet squeeze; do
  [ -f ${m}_ov_int8.xml ] || { $H export --model $m --dynamic-batch --output ${m}_dyn.onnx;
    $H build --model $m --backend openvino --int8 --onnx ${m}_dyn.onnx --output ${m}_ov_int8.xml; }
  for form in bls ensemble; do
    $H repository --model $m --artifact ${m}_ov_int8.xml --python-network --max-batch 4 \
      --pipeline-form $form --output ${m}_${form}_repo --force
  done
  $H bench --op pipeline --model $m --artifact ${m}_ov_int8.xml --images photos --iterations 3 \
    --output offline_${m} --force 2>&1 | tail -3 || true
done
for round in 1 2 3; do
  for m in hrnet squeeze; do
    for form in bls ensemble; do
      $H loadtest --repository ${m}_${form}_repo --images photos --concurrency 1 --concurrency 2 \
        --concurrency 4 --concurrency 8 --requests 48 --output load_${m}_${form}_r${round} --force
    done
  done
done
echo DONE
