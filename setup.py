"""Setuptools entry for the metafusion_ros ament_python package."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'metafusion_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'benchmarks']),
    package_data={PACKAGE: ['py.typed']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.xml')),
        (f'share/{PACKAGE}/models', glob('models/*')),
        ('bin', ['scripts/metafusion']),  # on PATH after sourcing (the console script is in lib/)
    ],
    install_requires=['setuptools', 'numpy', 'scipy', 'scikit-image', 'pyyaml'],
    extras_require={
        'train': ['torch'],
        'tensorrt': ['tensorrt', 'pycuda'],
        # colcon runs pytest only for packages with a pytest test dependency; setuptools >= 72
        # dropped tests_require, so without this extra `colcon test` runs 0 tests.
        'test': ['pytest'],
    },
    zip_safe=True,
    maintainer='metafusion_ros maintainers',
    maintainer_email='maintainers@metafusion-ros.invalid',
    description='MetaFusion: controlled false-negative reduction of pedestrians for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'metafusion = metafusion_ros.tools.cli:main',
            'metafusion_node = metafusion_ros.ros.executable:main',
        ],
    },
)
