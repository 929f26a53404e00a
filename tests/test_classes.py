import numpy as np

from hiast import classes


def test_nineteen_classes_and_palette():
    assert len(classes.CITYSCAPES_CLASSES) == 19
    assert classes.CITYSCAPES_PALETTE.shape == (19, 3)
    assert classes.CITYSCAPES_CLASSES[13] == "car"
    assert tuple(classes.CITYSCAPES_PALETTE[0]) == (128, 64, 128)


def test_labelid_map_covers_each_train_id_once():
    assert sorted(classes.CITYSCAPES_LABELID_TO_TRAINID.values()) == list(range(19))
    # the palette of label id k is the colour of its train class
    for label_id, train_id in classes.CITYSCAPES_LABELID_TO_TRAINID.items():
        assert (classes.CITYSCAPES_LABELID_PALETTE[label_id] == classes.CITYSCAPES_PALETTE[train_id]).all()


def test_map_labels_hand_case():
    raw = np.array([[7, 8, 26], [0, 33, 34]], dtype=np.uint8)
    expected = np.array([[0, 1, 13], [255, 18, 255]], dtype=np.uint8)
    assert (classes.map_labels(raw, classes.CITYSCAPES_LABELID_TO_TRAINID) == expected).all()


def test_synthia_map_and_absent_classes():
    raw = np.array([[3, 4, 2], [21, 0, 22], [16, 18, 20]], dtype=np.uint16)
    expected = np.array([[0, 1, 2], [3, 255, 255], [9, 14, 16]], dtype=np.uint8)
    assert (classes.map_labels(raw, classes.SYNTHIA_ID_TO_TRAINID) == expected).all()
    assert set(classes.SYNTHIA_ID_TO_TRAINID.values()) == set(range(19))


def test_metric_subsets():
    m = classes.METRIC_CLASSES
    assert len(m["mIoU-19"]) == 19 and len(m["mIoU-16"]) == 16 and len(m["mIoU-13"]) == 13
    assert len(m["mIoU-9"]) == 9
    assert not {9, 14, 16} & set(m["mIoU-16"])
    assert not {3, 4, 5, 9, 14, 16} & set(m["mIoU-13"])
    names13 = [classes.CITYSCAPES_CLASSES[c] for c in m["mIoU-13"]]
    assert names13 == ["road", "sidewalk", "building", "traffic light", "traffic sign", "vegetation", "sky",
                       "person", "rider", "car", "bus", "motorcycle", "bicycle"]


def test_oxford_maps():
    assert classes.OXFORD_CLASSES[8] == "road"
    raw = np.array([[1, 2, 3, 4, 5, 6, 7, 10, 11], [12, 13, 14, 17, 8, 9, 15, 16, 0]], dtype=np.uint8)
    expected = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8], [8, 8, 8, 8, 255, 255, 255, 255, 255]], dtype=np.uint8)
    assert (classes.map_labels(raw, classes.OXFORD_RAWID_TO_TRAINID) == expected).all()
    # Cityscapes merge: rider -> person, truck/bus -> automobile, motorcycle/bicycle -> two-wheel
    merge = classes.CITYSCAPES_TRAINID_TO_OXFORD
    assert merge[12] == merge[11] == 1 and merge[14] == merge[15] == merge[13] == 3 and merge[17] == merge[18] == 2
    assert [k for k, v in merge.items() if v == 255] == [3, 4, 5, 8, 9, 16]
    # Oxford palette entries are the Cityscapes colours of the merged classes' first member
    assert tuple(classes.OXFORD_PALETTE[8]) == tuple(classes.CITYSCAPES_PALETTE[0])


def test_colorize():
    labels = np.array([[0, 255]], dtype=np.uint8)
    rgb = classes.colorize(labels)
    assert rgb.shape == (1, 2, 3)
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == (0, 0, 0)
