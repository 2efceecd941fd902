// AnyDepth web page: upload an image, show the colour-mapped prediction and a 3D point cloud (three.js).
//
// One POST /v1/predict (format=json, include=npy,png16,ply) per image/option change returns everything:
// the float32 prediction (NPY, coloured here with the server's colour tables so changing the colour map
// needs no new request), the 16-bit PNG and the PLY point cloud (parsed here for the 3D view; the same
// bytes are offered for download). All URLs are relative, so the page also works behind a path prefix.
//
// For automated tests the page reports its progress on <body>: data-state (loading, idle, running, done,
// error), data-depth-rendered, data-cloud-rendered, data-cloud-points and data-webgl.

import * as THREE from 'three';
import { OrbitControls } from './vendor/OrbitControls.js';

const $ = (id) => document.getElementById(id);
const body = document.body;

const state = {
  file: null,          // Blob of the current input
  baseName: 'image',   // download file name stem (client side only; never sent as a path)
  result: null,        // JSON answer of /v1/predict
  value: null,         // Float32Array [H*W] prediction
  tables: {},          // colour map name -> Uint8Array(768)
  requestId: 0,
  blobUrls: [],
  three: null,         // {renderer, scene, camera, controls, points}
};

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

function setStatus(text, kind) {
  $('status').textContent = text;
  if (kind) body.dataset.state = kind;
}

async function apiJson(path, options) {
  const res = await fetch(path, { credentials: 'same-origin', ...options });
  let payload = null;
  try { payload = await res.json(); } catch (e) { payload = null; }
  if (!res.ok) {
    const detail = payload && payload.detail ? payload.detail : `${res.status} ${res.statusText}`;
    throw new Error(`${detail} (HTTP ${res.status})`);
  }
  return payload;
}

function hexToBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}

function base64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function lutFor(name) {
  const reversed = name.endsWith('_r');
  const base = reversed ? name.slice(0, -2) : name;
  const table = state.tables[base];
  if (!table) return null;
  if (!reversed) return table;
  const out = new Uint8Array(768);
  for (let i = 0; i < 256; i++) out.set(table.subarray(3 * (255 - i), 3 * (255 - i) + 3), 3 * i);
  return out;
}

// Parse a little-endian float32 .npy file (as written by numpy.save) -> {shape, data}.
function parseNpy(bytes) {
  const magic = String.fromCharCode(...bytes.subarray(0, 6));
  if (magic !== '\x93NUMPY') throw new Error('not an NPY file');
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder('latin1').decode(bytes.subarray(start, start + headerLen));
  if (!/'descr':\s*'<f4'/.test(header) || /'fortran_order':\s*True/.test(header)) {
    throw new Error(`unsupported NPY layout: ${header}`);
  }
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').filter((s) => s.trim()).map(Number);
  const offset = start + headerLen;
  const count = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset + offset, bytes.byteOffset + offset + 4 * count));
  return { shape, data };
}

// Parse the binary little-endian PLY written by anydepth (float x,y,z + uchar red,green,blue).
function parsePly(bytes) {
  const limit = Math.min(bytes.length, 4096);
  const headText = new TextDecoder('latin1').decode(bytes.subarray(0, limit));
  const end = headText.indexOf('end_header\n');
  if (!headText.startsWith('ply') || end < 0) throw new Error('not a PLY file');
  const lines = headText.slice(0, end).split('\n');
  let count = 0;
  const props = [];
  for (const line of lines) {
    const parts = line.trim().split(/\s+/);
    if (parts[0] === 'format' && parts[1] !== 'binary_little_endian') throw new Error(`PLY format ${parts[1]}`);
    if (parts[0] === 'element' && parts[1] === 'vertex') count = Number(parts[2]);
    if (parts[0] === 'property') props.push(parts.slice(1).join(' '));
  }
  const expected = ['float x', 'float y', 'float z', 'uchar red', 'uchar green', 'uchar blue'];
  if (props.join('|') !== expected.join('|')) throw new Error(`unexpected PLY properties: ${props.join(', ')}`);
  const offset = end + 'end_header\n'.length;
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset);
  const positions = new Float32Array(3 * count);
  const colors = new Float32Array(3 * count);
  const zs = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const o = 15 * i;
    const x = view.getFloat32(o, true);
    const y = view.getFloat32(o + 4, true);
    const z = view.getFloat32(o + 8, true);
    // OpenCV camera frame (x right, y down, z forward) -> three.js (x right, y up, z backward)
    positions[3 * i] = x;
    positions[3 * i + 1] = -y;
    positions[3 * i + 2] = -z;
    zs[i] = z;
    colors[3 * i] = view.getUint8(o + 12) / 255;
    colors[3 * i + 1] = view.getUint8(o + 13) / 255;
    colors[3 * i + 2] = view.getUint8(o + 14) / 255;
  }
  return { count, positions, colors, zs };
}

function percentile(sorted, p) {
  if (!sorted.length) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.round((p / 100) * (sorted.length - 1))));
  return sorted[i];
}

function nearness(v, space) {
  if (space.startsWith('disparity')) return v;
  if (space === 'depth_metric') return v > 0 ? 1 / v : 0;
  return -v;
}

function sanitizeStem(name) {
  const stem = String(name || 'image').replace(/\.[^.]*$/, '');
  return (stem.replace(/[^\w.-]+/g, '_').replace(/^[._]+/, '') || 'image').slice(0, 80);
}

function setDownload(id, blob, filename) {
  const a = $(id);
  if (!blob) {
    a.classList.add('disabled');
    a.removeAttribute('href');
    return;
  }
  const url = URL.createObjectURL(blob);
  state.blobUrls.push(url);
  a.href = url;
  a.download = filename;
  a.classList.remove('disabled');
}

function releaseBlobUrls() {
  for (const url of state.blobUrls) URL.revokeObjectURL(url);
  state.blobUrls = [];
}

// ------------------------------------------------------------------------------------------------
// Depth view
// ------------------------------------------------------------------------------------------------

function renderDepth() {
  const r = state.result;
  if (!r || !state.value) return;
  const lut = lutFor($('colormap').value) || lutFor(r.colormap);
  const canvas = $('depth-view');
  canvas.width = r.width;
  canvas.height = r.height;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(r.width, r.height);
  const [lo, hi] = r.color_range;
  const span = hi > lo ? hi - lo : 1;
  const v = state.value;
  for (let i = 0; i < v.length; i++) {
    const n = nearness(v[i], r.space);
    let t = Number.isFinite(n) ? (n - lo) / span : 0;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    const k = 3 * Math.round(t * 255);
    img.data[4 * i] = lut[k];
    img.data[4 * i + 1] = lut[k + 1];
    img.data[4 * i + 2] = lut[k + 2];
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  renderColorbar(lut);
  canvas.toBlob((blob) => setDownload('dl-color', blob, `${state.baseName}_color.png`), 'image/png');
  body.dataset.depthRendered = '1';
}

function renderColorbar(lut) {
  const c = $('colorbar');
  const ctx = c.getContext('2d');
  const img = ctx.createImageData(256, 1);
  for (let i = 0; i < 256; i++) {
    img.data.set([lut[3 * i], lut[3 * i + 1], lut[3 * i + 2], 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
}

// ------------------------------------------------------------------------------------------------
// 3D view
// ------------------------------------------------------------------------------------------------

function initThree() {
  if (state.three) return state.three;
  const host = $('cloud-view');
  let renderer;
  try {
    renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  } catch (e) {
    body.dataset.webgl = '0';
    host.innerHTML = '<p class="message">The 3D view needs WebGL, which this browser does not provide.</p>';
    state.three = { failed: true };
    return state.three;
  }
  body.dataset.webgl = '1';
  THREE.ColorManagement.enabled = false;
  renderer.outputColorSpace = THREE.LinearSRGBColorSpace; // vertex colours are already sRGB bytes
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  renderer.setClearColor(0x0d0f13, 1);
  host.appendChild(renderer.domElement);
  const scene = new THREE.Scene();
  const camera = new THREE.PerspectiveCamera(50, 1, 0.01, 1000);
  const controls = new OrbitControls(camera, renderer.domElement);
  controls.enableDamping = false;
  const three = { renderer, scene, camera, controls, points: null, home: null };
  const draw = () => renderer.render(scene, camera);
  controls.addEventListener('change', draw);
  const resize = () => {
    const w = Math.max(1, host.clientWidth);
    const h = Math.max(1, host.clientHeight);
    renderer.setSize(w, h, false);
    camera.aspect = w / h;
    camera.updateProjectionMatrix();
    draw();
  };
  new ResizeObserver(resize).observe(host);
  renderer.domElement.addEventListener('dblclick', () => {
    if (three.home) {
      camera.position.copy(three.home.position);
      controls.target.copy(three.home.target);
      controls.update();
      draw();
    }
  });
  three.draw = draw;
  three.resize = resize;
  state.three = three;
  resize();
  return three;
}

function pointColors(cloud) {
  if ($('pointcolor').value !== 'depth') return cloud.colors;
  const lut = lutFor($('colormap').value);
  const inv = new Float32Array(cloud.count);
  for (let i = 0; i < cloud.count; i++) inv[i] = cloud.zs[i] > 0 ? 1 / cloud.zs[i] : 0;
  const sorted = Float32Array.from(inv).sort();
  const lo = percentile(sorted, 1);
  const hi = percentile(sorted, 99);
  const span = hi > lo ? hi - lo : 1;
  const out = new Float32Array(3 * cloud.count);
  for (let i = 0; i < cloud.count; i++) {
    let t = (inv[i] - lo) / span;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    const k = 3 * Math.round(t * 255);
    out[3 * i] = lut[k] / 255;
    out[3 * i + 1] = lut[k + 1] / 255;
    out[3 * i + 2] = lut[k + 2] / 255;
  }
  return out;
}

function pointSize() {
  // three.js draws an attenuated point of world size s at distance z as s * (canvas height / 2) / z pixels;
  // one image pixel (times the PLY stride) seen from the original camera covers canvas height / image height.
  const r = state.result;
  const cloud = state.cloud;
  if (!r || !cloud) return 0.01;
  return (Number($('pointsize').value) * (r.ply_stride || 1) * 2 * cloud.zMedian) / r.height;
}

function renderCloud(resetView) {
  const three = initThree();
  const cloud = state.cloud;
  const r = state.result;
  if (three.failed || !cloud || !r) return;
  if (three.points) {
    three.scene.remove(three.points);
    three.points.geometry.dispose();
    three.points.material.dispose();
  }
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute('position', new THREE.BufferAttribute(cloud.positions, 3));
  geometry.setAttribute('color', new THREE.BufferAttribute(pointColors(cloud), 3));
  const material = new THREE.PointsMaterial({ size: pointSize(), vertexColors: true, sizeAttenuation: true });
  three.points = new THREE.Points(geometry, material);
  three.scene.add(three.points);
  if (resetView) {
    // Orbit around the median depth straight ahead of the original camera.
    const cam = three.camera;
    cam.fov = (2 * Math.atan(r.height / 2 / r.intrinsics.fy) * 180) / Math.PI;
    cam.near = Math.max(1e-4, cloud.zMin * 0.05);
    cam.far = cloud.zMax * 20 + 1;
    // Start slightly to the side of and above the original camera, so the first view shows the relief;
    // double-click returns here.
    const d = cloud.zMedian;
    const radius = 1.3 * d;
    const az = (25 * Math.PI) / 180;
    const el = (12 * Math.PI) / 180;
    three.controls.target.set(0, 0, -d);
    cam.position.set(
      radius * Math.sin(az) * Math.cos(el),
      radius * Math.sin(el),
      -d + radius * Math.cos(az) * Math.cos(el),
    );
    cam.updateProjectionMatrix();
    three.controls.update();
    three.home = { position: cam.position.clone(), target: three.controls.target.clone() };
  }
  three.resize();
  body.dataset.cloudPoints = String(cloud.count);
  body.dataset.cloudRendered = '1';
}

// ------------------------------------------------------------------------------------------------
// Prediction
// ------------------------------------------------------------------------------------------------

async function run() {
  if (!state.file) return;
  const id = ++state.requestId;
  setStatus('Predicting…', 'running');
  $('run').disabled = true;
  const form = new FormData();
  form.append('image', state.file, 'upload');
  form.append('format', 'json');
  form.append('include', 'npy,png16,ply');
  form.append('colormap', $('colormap').value);
  form.append('resolution', $('resolution').value);
  const fov = $('fov').value.trim();
  if (fov) form.append('fov', fov);
  const t0 = performance.now();
  let r;
  try {
    r = await apiJson('v1/predict', { method: 'POST', body: form });
  } catch (e) {
    if (id !== state.requestId) return;
    $('run').disabled = false;
    setStatus(`Error: ${e.message}`, 'error');
    return;
  }
  if (id !== state.requestId) return; // a newer request is under way
  try {
    releaseBlobUrls();
    state.result = r;
    const npy = base64ToBytes(r.npy);
    state.value = parseNpy(npy).data;
    const plyBytes = base64ToBytes(r.ply);
    const cloud = parsePly(plyBytes);
    const sortedZ = Float32Array.from(cloud.zs).sort();
    cloud.zMedian = percentile(sortedZ, 50) || 1;
    cloud.zMin = percentile(sortedZ, 0) || 0.1;
    cloud.zMax = percentile(sortedZ, 100) || 10;
    state.cloud = cloud;
    renderDepth();
    renderCloud(true);
    setDownload('dl-png16', new Blob([base64ToBytes(r.png16)], { type: 'image/png' }), `${state.baseName}_pred16.png`);
    setDownload('dl-npy', new Blob([npy], { type: 'application/octet-stream' }), `${state.baseName}_pred.npy`);
    setDownload('dl-ply', new Blob([plyBytes], { type: 'application/octet-stream' }), `${state.baseName}.ply`);
    const secs = ((performance.now() - t0) / 1000).toFixed(2);
    const [ph, pw] = r.proc_hw;
    const fovText = `${r.fov_deg.toFixed(1)}° FOV (${r.intrinsics_source.replace('_', ' ')})`;
    setStatus(`${r.width}×${r.height} px, processed at ${pw}×${ph}; ${cloud.count.toLocaleString()} points; ` +
      `${fovText}; ${secs} s (model ${r.timing.forward_s.toFixed(2)} s, batch of ${r.batch_size}).`, 'done');
  } catch (e) {
    setStatus(`Error: could not display the result: ${e.message}`, 'error');
  }
  $('run').disabled = false;
}

function setFile(blob, name) {
  state.file = blob;
  state.baseName = sanitizeStem(name);
  const img = $('input-view');
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  const url = URL.createObjectURL(blob);
  img.dataset.url = url;
  img.src = url;
  run();
}

// ------------------------------------------------------------------------------------------------
// Start-up
// ------------------------------------------------------------------------------------------------

async function loadModelInfo() {
  const m = await apiJson('v1/model');
  const params = m.parameters && m.parameters.total ? `${(m.parameters.total / 1e6).toFixed(m.parameters.total < 1e6 ? 2 : 1)} M parameters` : '';
  const name = m.name || m.checkpoint || m.runner;
  $('model-info').textContent = [name, params, m.output_space, `patch ${m.patch_size}`, m.device]
    .filter(Boolean).join(' · ');
  const res = $('resolution');
  const wanted = String(m.defaults.resolution);
  if (![...res.options].some((o) => o.value === wanted)) res.add(new Option(wanted, wanted));
  res.value = wanted;
  $('fov').placeholder = `auto (EXIF, else ${m.defaults.fov_deg})`;
}

async function loadColormaps() {
  const c = await apiJson('v1/colormaps');
  for (const [name, hex] of Object.entries(c.tables)) state.tables[name] = hexToBytes(hex);
  const sel = $('colormap');
  for (const name of c.names) sel.add(new Option(name, name));
  sel.value = c.default;
}

async function loadExamples() {
  const e = await apiJson('v1/examples');
  const box = $('examples');
  if (!e.examples.length) {
    $('examples-box').hidden = true;
    return;
  }
  for (const ex of e.examples) {
    const b = document.createElement('button');
    b.type = 'button';
    b.title = ex.name;
    b.dataset.example = ex.name;
    const img = document.createElement('img');
    img.src = ex.url;
    img.alt = ex.name;
    b.appendChild(img);
    b.addEventListener('click', async () => {
      try {
        const res = await fetch(ex.url, { credentials: 'same-origin' });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        setFile(await res.blob(), ex.name);
      } catch (err) {
        setStatus(`Error: cannot load example ${ex.name}: ${err.message}`, 'error');
      }
    });
    box.appendChild(b);
  }
}

function wireControls() {
  $('file').addEventListener('change', (ev) => {
    const f = ev.target.files && ev.target.files[0];
    if (f) setFile(f, f.name);
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    const f = ev.dataTransfer.files && ev.dataTransfer.files[0];
    if (f) setFile(f, f.name);
  });
  $('colormap').addEventListener('change', () => {
    renderDepth();
    if ($('pointcolor').value === 'depth') renderCloud(false);
  });
  $('resolution').addEventListener('change', run);
  $('fov').addEventListener('change', run);
  $('run').addEventListener('click', run);
  $('pointcolor').addEventListener('change', () => renderCloud(false));
  $('pointsize').addEventListener('input', () => {
    const t = state.three;
    if (t && t.points) {
      t.points.material.size = pointSize();
      t.draw();
    }
  });
  $('input-view').addEventListener('error', () => {
    if (state.file) $('input-view').alt = 'this browser cannot preview this format (the prediction still works)';
  });
}

async function main() {
  wireControls();
  try {
    await Promise.all([loadModelInfo(), loadColormaps(), loadExamples()]);
  } catch (e) {
    setStatus(`Error: cannot reach the service: ${e.message}`, 'error');
    return;
  }
  initThree();
  setStatus('Choose an image or an example.', 'idle');
}

main();
