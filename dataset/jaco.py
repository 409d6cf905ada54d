"""Jaco scenes like DeepMind's GQN "jaco": Kinova's Jaco arm at random joint angles beside a sphere target,
rendered by MuJoCo from the real arm's model; the writer.

Scene (DeepMind's description, gqn-datasets): a Jaco arm with nine joints at random joint angles and one
sphere target of random colour and position; 11 views of 64x64 from cameras around the arm. Here the arm
is the MuJoCo model that ships inside the `dm-control` package (dm_control/third_party/kinova: the arm's
6 hinge joints and the 3-finger hand's 3 finger joints, Kinova's meshes), its base at the origin on a floor.
Each scene draws every joint uniformly within the model's range (the full turn for the unlimited ones)
until no two parts of the arm touch and none passes through the floor; then the target: a sphere of
TARGET_RADIUS, of a random saturated colour, at a random place within the arm's reach (TARGET_REACH from
the base's axis, TARGET_HEIGHT above the floor), touching neither the arm nor the floor.

Cameras: VIEWS views, each at a random yaw around the arm, a pitch in CAMERA_PITCH (looking down), at a
distance in CAMERA_DISTANCE from LOOK_AT, looking at LOOK_AT (so the explorer and sample.py orbit the arm);
field of view FOV_DEG, MuJoCo's default. DeepMind's camera ranges and field of view are not published
(gqn-datasets issue 15): these are this project's choices, all in the constants below. The raw 5-number
cameras (x, y, z, yaw, pitch) follow the project's convention (dataset/builtin.py), no roll.

Look: a pale grey checked floor, a light sky gradient behind, the arm in its model's materials (dark links,
light grey rings and fingers), one spotlight from above that casts the arm's shadow and a soft fill light,
4x multisampling, so that the arm's pose and the target read clearly at 64x64.

Labels (test split): per pixel 0 background, 1 floor, 2 arm, 3 target (dataset/labels.py's jaco scheme),
from MuJoCo's segmentation rendering of the same view.

Rendering: MuJoCo through EGL (headless; MUJOCO_GL is set to egl here unless the user set it), one GL
context per process, made on its first scene. The writer renders in spawned worker processes only, even
with one worker: none inherits a context, and the calling process never loads Mesa's software rasteriser,
which crashes a process that also loads TensorFlow (in either order: both carry their own LLVM). `mujoco`
and `dm-control` are imported only to render (requirements-jaco.txt); training on rendered jaco scenes
never imports them.

Determinism: scene i of split `split` with seed `seed` is drawn from scene_rng(seed, split, i) only, and
MuJoCo's software rasteriser draws the same pixels for it in any process.

Command line:
    python dataset/jaco.py --out data/jaco --train_scenes 4000 --test_scenes 200 --seed 0
        [--workers 2] [--scenes_per_shard 1000] [--tfrecord --files_per_split 10] [--overwrite]
        [--no_progress]
writes data/jaco/train and data/jaco/test (test with labels) in the project's format, and with --tfrecord
also DeepMind-format files data/jaco/tfrecord/jaco/{train,test}/<i>-of-<n>.tfrecord.
"""
import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import importlib.util

import numpy as np

from dataset.builtin import (JPEG_QUALITY, SPLITS, RenderError, add_output_arguments, camera_basis,
                             check_arguments, encode_jpeg, ensure_rendered, exit_on_render_error, hsv_to_rgb,
                             iter_tasks, run_command, scene_rng, tune_malloc, write_rendered_split)
from dataset.labels import JACO_ARM, JACO_BACKGROUND, JACO_FLOOR, JACO_SCHEME, JACO_TARGET

DATASET = "jaco"
IMAGE_SIZE = 64
VIEWS = 11
FOV_DEG = 45.0                       # vertical (and horizontal: the frame is square)
LOOK_AT = (0.0, 0.0, 0.4)            # every camera looks here: about the middle of the arm's reach
CAMERA_DISTANCE = (1.4, 1.8)         # from LOOK_AT, metres
CAMERA_PITCH = (-0.6, -0.15)         # radians, looking down
TARGET_RADIUS = 0.07
FLOOR_HALF = 2                       # the floor reaches this far from the base along x and y; sky beyond
TARGET_REACH = (0.25, 0.7)           # the target's distance from the arm's vertical axis, metres
TARGET_HEIGHT = (TARGET_RADIUS, 0.7)  # the target's centre above the floor
TARGET_SATURATION = (0.6, 1.0)
TARGET_VALUE = (0.7, 1.0)
TRIES = 200                          # draws of a pose (or a target) before giving up; one in two succeeds
SCENES_PER_TASK = 8                  # scenes per multiprocessing task
RENDERER_VERSION = 1                 # bump when a change alters the rendered bytes (invalidates caches)
INSTALL = "pip install -r requirements-jaco.txt"

# The world around the arm; the arm and its hand are attached to "arm_mount" (see _build_world).
WORLD_XML = f"""
<mujoco model="gqn_jaco">
  <statistic center="0 0 0.3" extent="1.2"/>
  <visual>
    <quality shadowsize="1024" offsamples="4"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.25 0.25 0.25" specular="0 0 0"/>
    <global offwidth="{IMAGE_SIZE}" offheight="{IMAGE_SIZE}"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.80 0.86 0.92" rgb2="0.45 0.55 0.70"
             width="64" height="64"/>
    <texture name="checks" type="2d" builtin="checker" rgb1="0.66 0.64 0.60" rgb2="0.56 0.54 0.51"
             width="64" height="64"/>
    <material name="floor" texture="checks" texrepeat="4 4" reflectance="0"/>
  </asset>
  <worldbody>
    <light pos="0.8 0.6 4.0" dir="-0.2 -0.15 -0.97" directional="false" cutoff="35" exponent="1"
           castshadow="true" diffuse="0.65 0.65 0.65" specular="0.1 0.1 0.1"/>
    <light pos="0 0 3" dir="0 0 -1" directional="true" castshadow="false" diffuse="0.22 0.22 0.22"
           specular="0 0 0"/>
    <geom name="floor" type="plane" size="{FLOOR_HALF} {FLOOR_HALF} 0.1" material="floor"/>
    <body name="arm_mount"/>
    <geom name="target" type="sphere" size="{TARGET_RADIUS}" pos="0 0 5" rgba="1 0 0 1"
          contype="1" conaffinity="1"/>
    <camera name="view" pos="0 0 1" fovy="{FOV_DEG}"/>
  </worldbody>
</mujoco>
"""
PARKED = (0.0, 0.0, 5.0)             # the target's place while a pose is checked: touching nothing


def _mujoco():
    """The mujoco module (check_installed has found it), headless through EGL unless MUJOCO_GL says
    otherwise; RenderError when its GL back end cannot load (mujoco loads it on import)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        import mujoco
    except Exception as error:  # PyOpenGL fails in several ways when the back end's library is missing
        raise no_gl_context(error) from None
    return mujoco


def no_gl_context(error):
    """The RenderError for a GL back end that cannot load or make a context."""
    return RenderError(f"MuJoCo could not load its headless OpenGL back end (MUJOCO_GL="
                       f"{os.environ.get('MUJOCO_GL')}: {str(error).strip() or type(error).__name__}); "
                       f"install EGL with Mesa's software renderer (Debian: apt-get install libegl1 "
                       f"libegl-mesa0 libgl1-mesa-dri).")


def kinova_folder():
    """The folder of the Jaco arm's MuJoCo model inside the installed dm-control package (found without
    importing dm_control)."""
    spec = importlib.util.find_spec("dm_control")
    if spec is None or not spec.submodule_search_locations:
        raise RenderError(f"the jaco scenes need the Jaco arm's model from dm-control, which is not "
                          f"installed; run `{INSTALL}`.")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "third_party", "kinova")
    if not os.path.isfile(os.path.join(folder, "jaco_arm.xml")):
        raise RenderError(f"the installed dm-control has no Jaco arm model in {folder}; run `{INSTALL}`.")
    return folder


class World:
    """The compiled scene (floor, arm with hand, target, one camera), its state and this process's
    renderer."""

    def __init__(self):
        folder = check_installed()
        mujoco = self.mujoco = _mujoco()
        world = mujoco.MjSpec.from_string(WORLD_XML)
        arm = mujoco.MjSpec.from_file(os.path.join(folder, "jaco_arm.xml"))
        hand = mujoco.MjSpec.from_file(os.path.join(folder, "jaco_hand.xml"))
        arm.site("wristsite").attach_body(hand.body("hand"), "hand_", "")
        world.body("arm_mount").add_frame().attach_body(arm.body("b_base"), "arm_", "")
        self.model = model = world.compile()
        self.data = mujoco.MjData(model)
        limited = model.jnt_limited.astype(bool)
        self.low = np.where(limited, model.jnt_range[:, 0], 0.0)
        self.high = np.where(limited, model.jnt_range[:, 1], 2 * np.pi)
        self.target = model.geom("target").id
        self.camera = model.camera("view").id
        # label of each geom: the floor, the target, every other geom is the arm's
        self.geom_label = np.full(model.ngeom, JACO_ARM, np.uint8)
        self.geom_label[model.geom("floor").id] = JACO_FLOOR
        self.geom_label[self.target] = JACO_TARGET
        try:
            self.renderer = mujoco.Renderer(model, IMAGE_SIZE, IMAGE_SIZE)
        except Exception as error:  # the GL back end's own exception types differ between EGL and others
            raise no_gl_context(error) from None

    def touching(self):
        """Whether any two geoms touch (or the arm passes through the floor) in the current state."""
        self.mujoco.mj_forward(self.model, self.data)
        return self.data.ncon > 0

    def place_camera(self, camera):
        """Set the camera to the raw camera (x, y, z, yaw, pitch)."""
        forward, right, up = camera_basis(camera[3], camera[4])
        rotation = np.stack([right, up, -forward], axis=1)          # MuJoCo's camera looks along its -z
        quat = np.zeros(4)
        self.mujoco.mju_mat2Quat(quat, rotation.ravel())
        self.model.cam_pos[self.camera] = camera[:3]
        self.model.cam_quat[self.camera] = quat
        self.mujoco.mj_camlight(self.model, self.data)

    def render(self, camera, labels=False):
        """uint8 (64, 64, 3) of the current scene from the raw camera and, with labels, its labels."""
        self.place_camera(camera)
        self.renderer.update_scene(self.data, camera=self.camera)
        image = self.renderer.render().copy()
        if not labels:
            return image, None
        self.renderer.enable_segmentation_rendering()
        try:
            self.renderer.update_scene(self.data, camera=self.camera)
            ids = self.renderer.render()
        finally:
            self.renderer.disable_segmentation_rendering()
        geom = ids[..., 0]
        is_geom = (geom >= 0) & (ids[..., 1] == int(self.mujoco.mjtObj.mjOBJ_GEOM))
        label = np.full(geom.shape, JACO_BACKGROUND, np.uint8)
        label[is_geom] = self.geom_label[geom[is_geom]]
        return image, label


_WORLD = {}


def world():
    """This process's World, made on first use."""
    if os.getpid() not in _WORLD:
        _WORLD.clear()
        _WORLD[os.getpid()] = World()
    return _WORLD[os.getpid()]


def random_cameras(rng, views):
    """`views` raw cameras (views, 5) around the arm, each looking at LOOK_AT."""
    yaw = rng.uniform(0, 2 * np.pi, views)
    pitch = rng.uniform(*CAMERA_PITCH, views)
    distance = rng.uniform(*CAMERA_DISTANCE, views)
    forward, _, _ = camera_basis(yaw, pitch)
    position = np.asarray(LOOK_AT) - distance[:, None] * forward
    return np.concatenate([position, yaw[:, None], pitch[:, None]], axis=1)


def pose_scene(w, seed, split, index, views=VIEWS):
    """Put scene `index` of a split into the World w: the arm's joints, the target's place and colour; returns
    (joint angles (9,), target centre (3,), target colour (3,), cameras (views, 5))."""
    rng = scene_rng(seed, split, index)
    w.model.geom_pos[w.target] = PARKED
    for _ in range(TRIES):
        w.data.qpos[:] = rng.uniform(w.low, w.high)
        if not w.touching():
            break
    else:
        raise RenderError(f"no pose of the arm without a collision in {TRIES} draws for scene {index}; "
                          f"pass another --seed.")
    for _ in range(TRIES):
        angle, reach = rng.uniform(0, 2 * np.pi), rng.uniform(*TARGET_REACH)
        centre = np.array([reach * np.cos(angle), reach * np.sin(angle), rng.uniform(*TARGET_HEIGHT)])
        w.model.geom_pos[w.target] = centre
        if not w.touching():
            break
    else:
        raise RenderError(f"no place for the target clear of the arm in {TRIES} draws for scene {index}; "
                          f"pass another --seed.")
    colour = hsv_to_rgb(np.array([rng.uniform()]), rng.uniform(*TARGET_SATURATION),
                        rng.uniform(*TARGET_VALUE))[0]
    w.model.geom_rgba[w.target, :3] = colour
    return w.data.qpos.copy(), centre, colour, random_cameras(rng, views)


def render_scenes(seed, split, start, stop, views=VIEWS, labels=False):
    """Scenes start..stop-1 of a split -> list of (frames: `views` JPEG bytes, cameras float32 (views, 5))
    or, with labels, (frames, cameras, labels uint8 (views, 64, 64))."""
    w = world()
    out = []
    for i in range(start, stop):
        *_, cameras = pose_scene(w, seed, split, i, views)
        rendered = [w.render(camera, labels) for camera in cameras]
        scene = ([encode_jpeg(image) for image, _ in rendered], cameras.astype(np.float32))
        out.append(scene + (np.stack([label for _, label in rendered]),) if labels else scene)
    return out


def _render_task(args):
    return render_scenes(*args)


def iter_scenes(seed, split, n_scenes, views=VIEWS, workers=1, labels=False):
    """Yield the n_scenes scenes of a split in order, rendered by `workers` spawned processes (never by
    this one)."""
    tasks = [(seed, split, s, min(s + SCENES_PER_TASK, n_scenes), views, labels)
             for s in range(0, n_scenes, SCENES_PER_TASK)]
    return iter_tasks(_render_task, tasks, workers, always_spawn=True)


# ----------------------------------------------------------------------------- writing datasets

def builtin_root(data_root):
    """The folder of the built-in jaco scenes under data_root (train/ and test/ inside)."""
    return os.path.join(data_root, DATASET)


def render_parameters(train_scenes, test_scenes, seed, views=VIEWS):
    """Everything that decides the rendered bytes (what DONE.json records and compares)."""
    return {"generator": "dataset/jaco.py", "renderer_version": RENDERER_VERSION, "dataset": DATASET,
            "train_scenes": int(train_scenes), "test_scenes": int(test_scenes), "seed": int(seed),
            "views": int(views), "image_size": IMAGE_SIZE, "fov_deg": FOV_DEG, "jpeg_quality": JPEG_QUALITY}


def render_split(split_dir, split, n_scenes, seed, views=VIEWS, workers=1, scenes_per_shard=1000,
                 tfrecord_dir=None, files_per_split=10, progress=None):
    """Render one split into split_dir (the test split with label files beside its shards) and, when
    tfrecord_dir is given, also as DeepMind TFRecord files. Returns the number of scenes written."""
    check_installed()
    scenes = iter_scenes(seed, split, n_scenes, views, workers, labels=split == "test")
    return write_rendered_split(split_dir, scenes, n_scenes,
                                {"dataset": DATASET, "seed": int(seed), "split": split},
                                scenes_per_shard, tfrecord_dir, files_per_split, progress,
                                label_scheme=JACO_SCHEME)


def check_installed():
    """The arm model's folder (kinova_folder); RenderError (one sentence) unless MuJoCo and the arm's model
    are installed, found without importing either, before any worker starts (the workers report a GL back
    end that fails)."""
    if importlib.util.find_spec("mujoco") is None:
        raise RenderError(f"the jaco scenes are rendered by MuJoCo, which is not installed; run "
                          f"`{INSTALL}`.")
    return kinova_folder()


def ensure_builtin_jaco(root, train_scenes, test_scenes, seed=0, workers=None, progress=True, splits=SPLITS):
    """Render the built-in jaco scenes' `splits` into root/train and root/test (labels) once, and reuse them
    afterwards (dataset/builtin.py ensure_rendered). Returns (train_dir, test_dir)."""
    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    check_arguments(workers, 1, {"train_scenes": train_scenes, "test_scenes": test_scenes}, seed)
    return ensure_rendered(root, render_parameters(train_scenes, test_scenes, seed),
                           train_scenes, test_scenes,
                           lambda split_dir, split, n, tfrecord_dir, bar: render_split(
                               split_dir, split, n, seed, VIEWS, workers, progress=bar),
                           progress, "jaco", splits)


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Render scenes of Kinova's Jaco arm and a sphere target like "
                                            "DeepMind's jaco (gqn-datasets), with MuJoCo.")
    add_output_arguments(p, DATASET)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tune_malloc()
    total, seconds = exit_on_render_error(lambda: run_command(
        args, DATASET, lambda split_dir, split, n, tfrecord_dir, bar: render_split(
            split_dir, split, n, args.seed, VIEWS, args.workers, args.scenes_per_shard, tfrecord_dir,
            args.files_per_split, bar)))
    print(f"wrote {total} jaco scenes x {VIEWS} views to {args.out} in {seconds:.1f} s: "
          f"{total / max(seconds, 1e-9):.2f} scenes/s with {args.workers} worker(s)")


if __name__ == "__main__":
    main()
