"""RST Explorer app (placeholder page until the full app lands): a model summary."""
import pandas as pd
import streamlit as st

import rst

st.set_page_config(page_title="RST Explorer", layout="wide")
st.title("RST Explorer")
arch = st.selectbox("Architecture", rst.list_models(), index=rst.list_models().index("fmnist_conv4"))
dataset = "fashion_mnist" if arch.startswith("fmnist") else "cifar10"
model = rst.build_network(rst.NetworkSpec(arch, dataset=dataset, seed=0), keep_ratio=0.1)
st.dataframe(pd.DataFrame(rst.layer_stats(model)))
