from setuptools import find_packages, setup

setup(
    name="part_d2",
    version="0.1.0",
    description="Instance-level part segmentation for Detectron2: OPS and PartDistillation",
    packages=find_packages(include=("part_d2", "part_d2.*")),
    package_data={"part_d2": ["data/metadata/*.json", "data/metadata/**/*.json", "engine/web_static/*"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=1.10",
        "torchvision",
        "fvcore",
        "pycocotools>=2.0.2",
        "numpy",
        "opencv-python-headless",
        "scikit-learn",
        "scikit-image",
        "pydensecrf2",
        "scipy",
        "shapely",
        "tqdm",
    ],
    extras_require={"slurm": ["submitit"], "web": ["flask>=3.0"], "test": ["pytest", "lvis"]},
)
