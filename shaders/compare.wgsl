// Flicker, fade and subtraction in the current pane, from the two frames already uploaded for
// window/level (shaders/image.wgsl): the prior is sampled through the registration transform at
// every current pixel, so that it lines up with the current and the current's boxes stay on their
// pixels. Nothing is resampled or re-uploaded on the CPU; a change of window, fade, flicker phase
// or subtraction window only rewrites this uniform.

struct Params {
    // The current's image rect in pane-normalized coordinates (x0, y0, x1, y1).
    img_rect: vec4<f32>,
    // The current's (window center, window width, invert 0|1, mode: 0 grey, 1 colour, 2 VOI LUT).
    window: vec4<f32>,
    // The current's VOI LUT (first mapped value, entries, max output, smooth 0|1).
    lut: vec4<f32>,
    // prior = M · (x, y, 1) for a current pixel centre (x, y) (centres at integer coordinates):
    // the registration's fixed_from_moving, or the relative-position map without one.
    row0: vec4<f32>,
    row1: vec4<f32>,
    // (kind: 1 blend the prior over the current (flicker, fade), 2 subtraction;
    //  prior opacity; subtraction window ±; unused)
    compare: vec4<f32>,
    // (current grey sign, prior grey sign: -1 for MONOCHROME1, as Frame::to_gray; prior is colour
    //  0|1; current is colour 0|1)
    signs: vec4<f32>,
};

@group(0) @binding(0) var cur: texture_2d<f32>;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var lut: texture_2d<f32>;
@group(0) @binding(3) var prior: texture_2d<f32>;

struct VsOut {
    @builtin(position) pos: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) vi: u32) -> VsOut {
    let uv = vec2<f32>(f32(vi & 1u), f32(vi >> 1u));
    let p = mix(params.img_rect.xy, params.img_rect.zw, uv);
    var out: VsOut;
    out.pos = vec4<f32>(p.x * 2.0 - 1.0, 1.0 - p.y * 2.0, 0.0, 1.0);
    out.uv = uv;
    return out;
}

fn texel_cur(p: vec2<i32>, dims: vec2<i32>) -> vec4<f32> {
    return textureLoad(cur, clamp(p, vec2<i32>(0, 0), dims - vec2<i32>(1, 1)), 0);
}

fn texel_prior(p: vec2<i32>, dims: vec2<i32>) -> vec4<f32> {
    return textureLoad(prior, clamp(p, vec2<i32>(0, 0), dims - vec2<i32>(1, 1)), 0);
}

// The current as image.wgsl fetches it (bilinear by hand, or nearest when not smooth).
fn fetch_cur(uv: vec2<f32>) -> vec4<f32> {
    let dims = vec2<i32>(textureDimensions(cur));
    let pos = uv * vec2<f32>(dims);
    if (params.lut.w < 0.5) {
        return texel_cur(vec2<i32>(floor(pos)), dims);
    }
    let q = pos - 0.5;
    let base = vec2<i32>(floor(q));
    let f = q - floor(q);
    let a = texel_cur(base, dims);
    let b = texel_cur(base + vec2<i32>(1, 0), dims);
    let c = texel_cur(base + vec2<i32>(0, 1), dims);
    let d = texel_cur(base + vec2<i32>(1, 1), dims);
    return mix(mix(a, b, f.x), mix(c, d, f.x), f.y);
}

// The prior at a prior pixel-centre position, bilinear and clamped at the border, as
// GrayImage::sample does on the CPU.
fn fetch_prior(p: vec2<f32>) -> vec4<f32> {
    let dims = vec2<i32>(textureDimensions(prior));
    let base = vec2<i32>(floor(p));
    let f = p - floor(p);
    let a = texel_prior(base, dims);
    let b = texel_prior(base + vec2<i32>(1, 0), dims);
    let c = texel_prior(base + vec2<i32>(0, 1), dims);
    let d = texel_prior(base + vec2<i32>(1, 1), dims);
    return mix(mix(a, b, f.x), mix(c, d, f.x), f.y);
}

fn luminance(s: vec4<f32>) -> f32 {
    return (0.299 * s.r + 0.587 * s.g + 0.114 * s.b) * 255.0;
}

// Frame::to_gray of a fetched sample: MONOCHROME1 negated, luminance for colour.
fn to_gray(s: vec4<f32>, sign: f32, colour: f32) -> f32 {
    if (colour > 0.5) {
        return luminance(s);
    }
    return sign * s.r;
}

fn voi_lut(v: f32) -> f32 {
    let n = i32(params.lut.y);
    let i = clamp(i32(round(v - params.lut.x)), 0, max(n - 1, 0));
    let e = textureLoad(lut, vec2<i32>(i % 256, i / 256), 0).r;
    return e / max(params.lut.z, 1.0);
}

fn windowed(v: f32) -> f32 {
    let width = max(params.window.y, 1e-6);
    return clamp((v - params.window.x) / width + 0.5, 0.0, 1.0);
}

fn inverted(rgb: vec3<f32>) -> vec3<f32> {
    if (params.window.z > 0.5) {
        return vec3<f32>(1.0) - rgb;
    }
    return rgb;
}

// The current as the pane shows it (image.wgsl's fs_main).
fn present_current(s: vec4<f32>) -> vec3<f32> {
    let mode = i32(params.window.w + 0.5);
    if (mode == 1) {
        return inverted(vec3<f32>(windowed(s.r * 255.0), windowed(s.g * 255.0), windowed(s.b * 255.0)));
    } else if (mode == 2) {
        return inverted(vec3<f32>(voi_lut(s.r)));
    }
    return inverted(vec3<f32>(windowed(s.r)));
}

// A prior grey value (to_gray) shown as the current is shown: taken back into the current's
// stored values (the current's sign) and through the current's window or VOI LUT; grey on a
// colour current.
fn present_prior(g: f32) -> vec3<f32> {
    let mode = i32(params.window.w + 0.5);
    if (mode == 1) {
        return inverted(vec3<f32>(windowed(g)));
    }
    let raw = g * params.signs.x;
    if (mode == 2) {
        return inverted(vec3<f32>(voi_lut(raw)));
    }
    return inverted(vec3<f32>(windowed(raw)));
}

// Blue (current darker) through black to orange (current brighter): snapshot::diverging_rgb.
fn diverging(d: f32, w: f32) -> vec3<f32> {
    let t = clamp(d / max(w, 1e-6), -1.0, 1.0);
    let a = abs(t);
    if (t >= 0.0) {
        return vec3<f32>(a, 200.0 / 255.0 * a, a * a / 3.0);
    }
    return vec3<f32>(a * a / 3.0, 160.0 / 255.0 * a, a);
}

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    let s = fetch_cur(in.uv);
    // The current pixel centre under this fragment, and where the prior has it.
    let c = in.uv * vec2<f32>(textureDimensions(cur)) - 0.5;
    let p = vec2<f32>(dot(params.row0.xyz, vec3<f32>(c, 1.0)), dot(params.row1.xyz, vec3<f32>(c, 1.0)));
    let pdims = vec2<f32>(textureDimensions(prior));
    let inside = p.x >= -0.5 && p.y >= -0.5 && p.x <= pdims.x - 0.5 && p.y <= pdims.y - 0.5;
    let prior_gray = to_gray(fetch_prior(p), params.signs.y, params.signs.z);
    let kind = i32(params.compare.x + 0.5);
    if (kind == 2) {
        if (!inside) {
            return vec4<f32>(vec3<f32>(40.0 / 255.0), 1.0);
        }
        let d = to_gray(s, params.signs.x, params.signs.w) - prior_gray;
        return vec4<f32>(diverging(d, params.compare.z), 1.0);
    }
    let current = present_current(s);
    // Where the prior does not reach, its layer is black (as the CPU fallback's texture is).
    var shown_prior = vec3<f32>(0.0);
    if (inside) {
        shown_prior = present_prior(prior_gray);
    }
    return vec4<f32>(mix(current, shown_prior, clamp(params.compare.y, 0.0, 1.0)), 1.0);
}
